"""Check a dataset before training: every label problem and every unreadable image, listed.

Used by ``cspdet check-data``. The scan finds label problems (as at training time); the
decode pass opens every image the way training will, and notes the ones that need a
conversion (grey, alpha, palette, 16-bit, EXIF rotation) and those that cannot be read.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from PIL import Image

from .config import DatasetNotFoundError
from .image_io import EXIF_ORIENTATION, ImageReadError, decode_image, read_bytes
from .labels import LabelError, ScanReport


@dataclass
class SplitCheck:
    split: str
    report: Optional[ScanReport] = None
    error: str = ""                     # a LabelError / missing data: the split is unusable
    unreadable: List[str] = field(default_factory=list)
    converted: Dict[str, List[str]] = field(default_factory=dict)   # kind -> files
    size_mismatch: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No error, no unreadable, missing or empty image, no skipped line and no dropped box."""
        r = self.report
        return not self.error and not self.unreadable and r is not None and not (
            r.errors or r.missing_images or r.empty_images or r.dropped_boxes or r.malformed_lines
            or r.unreadable_labels or r.unreadable_images)


def _image_kind(data: bytes) -> List[str]:
    import io
    kinds = []
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode = im.mode
            orientation = int(im.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:
        return kinds
    if mode in ("L", "1"):
        kinds.append("grayscale")
    elif mode in ("LA", "RGBA", "PA"):
        kinds.append("alpha (composited on grey)")
    elif mode == "P":
        kinds.append("palette")
    elif mode.startswith("I;16") or mode == "I":
        kinds.append("16-bit")
    elif mode == "CMYK":
        kinds.append("CMYK")
    if orientation != 1:
        kinds.append("EXIF-rotated")
    return kinds


def check_split(data_cfg, split: str, decode: bool = True, progress: bool = True) -> SplitCheck:
    from tqdm import tqdm

    from . import scan_split

    result = SplitCheck(split)
    try:  # strict=False: the fatal label problems are listed with all the others
        records, _, _, _, report = scan_split(data_cfg, split, strict=False)
    except (LabelError, DatasetNotFoundError) as e:  # unreadable JSON, missing folder
        result.error = f"{type(e).__name__}: {e}"
        return result
    result.report = report
    if not decode:
        return result
    for rec in tqdm(records, desc=f"decoding {split}", unit="img", disable=not progress, leave=False):
        try:
            data = read_bytes(rec.path)
            img, _ = decode_image(data, rec.path, rec.hw)
        except ImageReadError as e:
            result.unreadable.append(str(e))
            continue
        for kind in _image_kind(data):
            result.converted.setdefault(kind, []).append(rec.path)
        if rec.hw is not None and img.shape[:2] != tuple(rec.hw):
            result.size_mismatch.append(f"{rec.path}: image {img.shape[1]}x{img.shape[0]}, labels say "
                                        f"{rec.hw[1]}x{rec.hw[0]}")
    return result


def format_check(res: SplitCheck, limit: int = 20) -> str:
    lines = [f"== split '{res.split}'"]
    if res.error:
        lines.append(f"  ERROR (training would stop here): {res.error}")
        return "\n".join(lines)
    r = res.report
    if r.errors:  # every one, however many: each must be fixed before training
        lines.append(f"  ERROR (training would stop here): {r.error_title}:")
        lines.extend(f"    {x}" for x in r.errors)

    def section(title, items, whole=False):
        """``whole``: what loses data is listed in full; notes stop after ``limit`` (0 = all)."""
        if items:
            n = len(items) if whole or limit <= 0 else limit
            lines.append(f"  {title}: {len(items)}")
            lines.extend(f"    {x}" for x in items[:n])
            if len(items) > n:
                lines.append(f"    ... {len(items) - n} more")

    lines.append(f"  images: {r.images}, boxes: {r.boxes}, background images (no boxes): "
                 f"{len(r.background_images)}, crowd boxes (ignored in training, kept for eval): "
                 f"{r.crowd_boxes}" + (f", difficult boxes (ignore regions in eval): {r.difficult_boxes}"
                                       if r.difficult_boxes else ""))
    section("missing image files (skipped)", r.missing_images, whole=True)
    section("zero-byte image files (skipped)", r.empty_images, whole=True)
    section("unreadable images (corrupt/truncated; skipped at load time)", res.unreadable, whole=True)
    section("images whose header cannot be read (skipped)", r.unreadable_images, whole=True)
    section("label files that cannot be parsed (their image is skipped)", r.unreadable_labels, whole=True)
    section("label files without an image (ignored)", r.labels_without_image)
    section("malformed label lines (skipped; the image keeps its other boxes)", r.malformed_lines, whole=True)
    section("boxes clipped to the image", r.clipped_boxes)
    section("boxes dropped (zero-area, negative, NaN, outside)", r.dropped_boxes, whole=True)
    section("images whose size differs from the labels (boxes clipped)", res.size_mismatch)
    for kind, files in sorted(res.converted.items()):
        section(f"converted on load: {kind}", files)
    section("notes (sizes, names and formats that differ from what the labels say)", r.notes)
    section("background images", r.background_images)
    return "\n".join(lines)
