"""Letterbox resize and its inverse: the one mapping between image and network coordinates.

Training, evaluation, the inference API, the demo and the exporter all use these two
functions, so boxes always map back through exactly the resize that produced the input.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np

from ..common import Size, to_hw

PAD_VALUE = 114  # grey of the padding (and of transparent pixels, see image_io)


def padded_size(size: Size, stride: int = 32) -> Tuple[int, int]:
    """The network input (h, w) for a requested size: each side rounded up to ``stride``.

    An int gives an int (square input), an (h, w) pair a pair.
    """
    h, w = to_hw(size)
    out = (-(-h // stride) * stride, -(-w // stride) * stride)
    return out[0] if isinstance(size, int) else out


def letterbox_params(hw: Sequence[int], size: Size, stride: int = 32, scaleup: bool = True
                     ) -> Tuple[float, Tuple[float, float]]:
    """Scale ratio and (left, top) padding that :func:`letterbox` uses for an image of ``hw``."""
    th, tw = to_hw(padded_size(size, stride))
    h, w = int(hw[0]), int(hw[1])
    ratio = min(th / h, tw / w)
    if not scaleup:
        ratio = min(ratio, 1.0)
    nh, nw = max(1, int(round(h * ratio))), max(1, int(round(w * ratio)))
    return ratio, (float((tw - nw) // 2), float((th - nh) // 2))


def letterbox(img: np.ndarray, size: Size, color: int = PAD_VALUE, stride: int = 32,
              scaleup: bool = True) -> Tuple[np.ndarray, float, Tuple[float, float]]:
    """Resize ``img`` (HxWxC) keeping its aspect ratio and pad it to ``size``.

    ``size`` is an int (square) or (h, w); each side is rounded up to a multiple of ``stride``
    so that any requested size is accepted. Returns the padded image, the scale ratio and the
    (left, top) padding in pixels.
    """
    th, tw = to_hw(padded_size(size, stride))
    h, w = img.shape[:2]
    ratio, (left, top) = letterbox_params((h, w), size, stride, scaleup)
    nh, nw = max(1, int(round(h * ratio))), max(1, int(round(w * ratio)))
    if (nh, nw) != (h, w):
        interp = cv2.INTER_AREA if ratio < 1 else cv2.INTER_LINEAR
        img = cv2.resize(img, (nw, nh), interpolation=interp)
    top, left = int(top), int(left)
    out = cv2.copyMakeBorder(img, top, th - nh - top, left, tw - nw - left,
                             cv2.BORDER_CONSTANT, value=(color,) * 3)
    if out.ndim == 2:
        out = out[..., None]
    return out, ratio, (float(left), float(top))


def unletterbox_boxes(boxes, ratio: float, pad: Sequence[float], orig_shape: Sequence[int]):
    """Map xyxy boxes from letterboxed-input pixels back to the original image, clipped.

    Works on numpy arrays and torch tensors (returns the same type, a new object).
    """
    left, top = pad
    h, w = orig_shape[:2]
    out = boxes.clone() if hasattr(boxes, "clone") else np.array(boxes, dtype=np.float32, copy=True)
    out[..., [0, 2]] = (out[..., [0, 2]] - left) / ratio
    out[..., [1, 3]] = (out[..., [1, 3]] - top) / ratio
    out[..., [0, 2]] = out[..., [0, 2]].clip(0, w)
    out[..., [1, 3]] = out[..., [1, 3]].clip(0, h)
    return out
