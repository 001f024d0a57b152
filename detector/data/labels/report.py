"""What every label reader shares: the scan report, the label error and box sanitising.

A reader decides everything that can be decided from the label files once, at load time, and
reads the whole split before refusing anything, so one run reports every problem. The
:class:`ScanReport` keeps every case for ``cspdet check-data``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Sequence

import numpy as np

from ..image_io import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


class LabelError(ValueError):
    """Labels that cannot be trained on without guessing (unknown class, missing image id)."""


def _shown(items: Sequence[str], limit: int = 5) -> str:
    return "; ".join(items[:limit]) + (f"; ... ({len(items) - limit} more)" if len(items) > limit else "")


def fmt_box(box) -> str:
    """A box as plain numbers: ``[10.0, 2.5, nan, 4.0]`` (not ``np.float32(10.0)``)."""
    return "[" + ", ".join(f"{round(float(v), 3):g}" for v in box) + "]"


@dataclass
class ScanReport:
    """What the scan found; warnings are logged, this keeps the details.

    ``errors`` are the fatal problems (the split cannot be used until they are fixed); the
    scan raises them all in one :class:`LabelError` unless asked not to (check_data).
    """
    images: int = 0
    boxes: int = 0
    background_images: List[str] = field(default_factory=list)
    missing_images: List[str] = field(default_factory=list)
    empty_images: List[str] = field(default_factory=list)
    labels_without_image: List[str] = field(default_factory=list)
    malformed_lines: List[str] = field(default_factory=list)
    clipped_boxes: List[str] = field(default_factory=list)
    dropped_boxes: List[str] = field(default_factory=list)
    crowd_boxes: int = 0
    unreadable_labels: List[str] = field(default_factory=list)
    unreadable_images: List[str] = field(default_factory=list)
    difficult_boxes: int = 0
    notes: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    error_title: str = ""

    def log_summary(self, name: str) -> None:
        log.info("%s: %d images, %d boxes, %d background images, %d crowd boxes (ignored in "
                 "training, kept for evaluation)", name, self.images, self.boxes,
                 len(self.background_images), self.crowd_boxes)
        for items, what in ((self.missing_images, "image files missing (skipped)"),
                            (self.empty_images, "zero-byte image files (skipped)"),
                            (self.unreadable_images, "images whose header cannot be read (skipped)"),
                            (self.labels_without_image, "label files without an image (ignored)"),
                            (self.unreadable_labels, "label files that cannot be parsed (image skipped)"),
                            (self.malformed_lines, "malformed label lines (skipped)"),
                            (self.clipped_boxes, "boxes clipped to the image"),
                            (self.dropped_boxes, "boxes dropped (zero-area, negative or NaN)")):
            if items:
                log.warning("%s: %d %s: %s", name, len(items), what, _shown(items))
        if self.difficult_boxes:
            log.info("%s: %d boxes marked difficult (ignore regions in evaluation)", name,
                     self.difficult_boxes)
        if self.notes:
            log.info("%s: %d notes: %s", name, len(self.notes), _shown(self.notes))

    def raise_errors(self) -> None:
        """One :class:`LabelError` listing every fatal problem, if there is any."""
        if self.errors:
            raise LabelError(f"{self.error_title or 'labels cannot be used'}:\n  "
                             + "\n  ".join(self.errors))


def sanitize_boxes(boxes: np.ndarray, width, height, where: Callable[[int], str],
                   report: ScanReport, tol: float = 0.0) -> np.ndarray:
    """Clip xyxy boxes (in place) to [0, width] x [0, height]; return the mask of boxes to keep.

    ``width``/``height`` are numbers or one per box. Boxes with NaN/inf coordinates, or with
    zero or negative size before or after clipping, are dropped and recorded; boxes that stuck
    out by more than ``tol`` (rounding in label files) are recorded as clipped. ``where(i)``
    names box ``i`` in messages (called only for the boxes reported).
    """
    n = len(boxes)
    if n == 0:
        return np.ones(0, bool)
    w = np.broadcast_to(np.asarray(width, np.float32), (n,))
    h = np.broadcast_to(np.asarray(height, np.float32), (n,))
    finite = np.isfinite(boxes).all(1)
    with np.errstate(invalid="ignore"):
        positive = finite & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        clipped = np.stack([np.clip(boxes[:, 0], 0, w), np.clip(boxes[:, 1], 0, h),
                            np.clip(boxes[:, 2], 0, w), np.clip(boxes[:, 3], 0, h)], 1)
        inside = positive & (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        moved = np.abs(clipped - boxes).max(1)
    for i in np.flatnonzero(~inside):
        why = ("non-finite box" if not finite[i] else
               "zero or negative size" if not positive[i] else "outside the image")
        report.dropped_boxes.append(f"{where(int(i))}: {why} {fmt_box(boxes[i])}")
    for i in np.flatnonzero(inside & (moved > tol)):
        report.clipped_boxes.append(where(int(i)))
    boxes[inside] = clipped[inside]
    return inside


def check_image_file(path: str, report: ScanReport) -> bool:
    try:
        size = os.stat(path).st_size
    except OSError:
        report.missing_images.append(str(path))
        return False
    if size == 0:
        report.empty_images.append(str(path))
        return False
    return True



def list_images(images_dir: Path) -> List[Path]:
    """Every image file under a folder (any depth), sorted."""
    return sorted(p for p in Path(images_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
