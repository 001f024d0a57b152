"""Read any image a user's dataset may hold as RGB uint8, or fail with a clear ImageReadError.

OpenCV decodes (fast); the odd cases are converted explicitly: grayscale and grey+alpha ->
RGB, RGBA composited over grey 114 (the padding colour) so transparent areas do not become
random colours, palette PNGs expanded, 16-bit scaled to 8-bit, and the EXIF orientation
applied the way image viewers, annotation tools (CVAT, labelme, Label Studio), OpenCV's
``imread`` and Ultralytics show the image.

COCO JSON records ``width``/``height`` of the frame its boxes are in: when the EXIF-rotated
frame disagrees with them but the stored (raw) frame matches, the annotation was made on the
raw pixels, and we keep them unrotated (see :func:`read_image`).
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from .letterbox import PAD_VALUE

log = logging.getLogger(__name__)

# what counts as an image in a folder (datasets, anchors, the demo)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
EXIF_ORIENTATION = 0x0112


class ImageReadError(OSError):
    """The file is missing, empty, truncated or not a decodable image."""


def read_bytes(path) -> bytes:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read ({e})") from None
    if not data:
        raise ImageReadError(f"{path}: zero-byte file")
    return data


def _jpeg_without_exif(data: bytes) -> bool:
    """True when ``data`` is a JPEG whose header segments (up to the image data) hold no EXIF
    block: the common case, answered by walking a few segment headers instead of opening
    the file with PIL (~0.7 ms per image). Anything unusual answers False (PIL decides)."""
    if not data.startswith(b"\xff\xd8"):
        return False
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return False
        marker = data[i + 1]
        if marker == 0xFF:          # fill byte
            i += 1
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: no EXIF before it
            return True
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xE1 and data[i + 4:i + 8] == b"Exif":
            return False
        if length < 2:
            return False
        i += 2 + length
    return False


def exif_orientation(data: bytes) -> int:
    """EXIF orientation tag (1..8) of an encoded image; 1 when absent or unreadable."""
    if _jpeg_without_exif(data):
        return 1
    try:
        with Image.open(io.BytesIO(data)) as im:
            value = int(im.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:
        return 1
    return value if 1 <= value <= 8 else 1


def apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip stored pixels to the displayed frame (same result as PIL's exif_transpose)."""
    if orientation == 2:
        img = img[:, ::-1]
    elif orientation == 3:
        img = img[::-1, ::-1]
    elif orientation == 4:
        img = img[::-1]
    elif orientation == 5:
        img = img.swapaxes(0, 1)
    elif orientation == 6:
        img = np.rot90(img, k=-1)
    elif orientation == 7:
        img = np.rot90(img.swapaxes(0, 1), k=2)
    elif orientation == 8:
        img = np.rot90(img, k=1)
    return np.ascontiguousarray(img)


def _is_truncated_jpeg(data: bytes) -> bool:
    """A JPEG without its end-of-image marker. Data after the marker (some cameras append
    some) is checked by a full PIL decode, which raises on a real truncation."""
    if not data.startswith(b"\xff\xd8"):
        return False
    if data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        return False
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception:
        return True
    return False


def _to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """OpenCV IMREAD_UNCHANGED output (any depth, 1-4 channels, BGR order) -> RGB uint8."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        scale = 255.0 if float(np.nanmax(img)) <= 1.0 else 1.0
        img = np.clip(np.nan_to_num(img) * scale, 0, 255).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img[..., 0], cv2.COLOR_GRAY2RGB)
    if channels == 2:  # grey + alpha
        gray = _over_grey(img[..., :1].astype(np.float32), img[..., 1:2])
        return cv2.cvtColor(gray[..., 0], cv2.COLOR_GRAY2RGB)
    if channels == 4:
        rgb = _over_grey(img[..., 2::-1].astype(np.float32), img[..., 3:4])
        return np.ascontiguousarray(rgb)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _over_grey(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32) / 255.0
    out = color * a + PAD_VALUE * (1.0 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def decode_image(data: bytes, name: str = "<bytes>",
                 expected_hw: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, bool]:
    """Decode bytes to RGB uint8 (H, W, 3). Returns the image and whether EXIF was applied."""
    if not data:
        raise ImageReadError(f"{name}: zero-byte file")
    buf = np.frombuffer(data, np.uint8)
    try:
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise ImageReadError(f"{name}: cannot decode ({str(e).strip().splitlines()[-1]})") from None
    if img is None or img.size == 0:
        raise ImageReadError(f"{name}: not a decodable image (corrupt or unsupported format)")
    if _is_truncated_jpeg(data):
        raise ImageReadError(f"{name}: truncated JPEG (no end-of-image marker)")
    img = _to_rgb_uint8(img)
    orientation = exif_orientation(data)
    if orientation == 1:
        return img, False
    rotated = apply_orientation(img, orientation)
    if expected_hw is not None:
        eh, ew = int(expected_hw[0]), int(expected_hw[1])
        if rotated.shape[:2] != (eh, ew) and img.shape[:2] == (eh, ew):
            return img, False  # labels were made on the raw, unrotated pixels
    return rotated, True


def read_image(path, expected_hw: Optional[Sequence[int]] = None) -> np.ndarray:
    """Read ``path`` as RGB uint8 (H, W, 3); raise :class:`ImageReadError` if it cannot be.

    ``expected_hw`` (the (height, width) a COCO JSON records) decides the EXIF question for
    images rotated by 90 degrees, see the module docstring.
    """
    img, _ = decode_image(read_bytes(path), str(path), expected_hw)
    return img


def image_header(path) -> Tuple[Tuple[int, int], str]:
    """((height, width) as :func:`read_image` returns it, file format by content: ``JPEG``,
    ``PNG`` ...) from the header only; the format tells a PNG saved under a .jpg name."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = int(im.getexif().get(EXIF_ORIENTATION, 1))
            fmt = str(im.format or "")
    except Exception as e:
        raise ImageReadError(f"{path}: cannot read image header ({e})") from None
    return ((w, h) if orientation in (5, 6, 7, 8) else (h, w)), fmt


def image_size(path) -> Tuple[int, int]:
    """(height, width) of an image as :func:`read_image` returns it, from the header only."""
    return image_header(path)[0]
