"""YOLO txt labels (``images/**/x.jpg`` beside ``labels/**/x.txt``) -> records.

A malformed line is skipped and reported (the image keeps its other boxes); class indices
outside the data config's classes are fatal, all listed in one :class:`LabelError`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from ..config import DatasetNotFoundError
from ..image_io import ImageReadError, image_size
from ..records import RecordStore
from .report import ScanReport, check_image_file, list_images, sanitize_boxes

log = logging.getLogger(__name__)


@dataclass
class YoloLabels:
    records: RecordStore
    report: ScanReport


def scan_yolo(images_dir: str, labels_dir: str, num_classes: int, strict: bool = True) -> YoloLabels:
    """Pair ``images/**/x.jpg`` with ``labels/**/x.txt`` (``class cx cy w h``, normalised).

    Lines with more than 5 numbers are polygons (YOLO segmentation labels): their box is
    their extent. Image ids are the indices in the sorted image list. A malformed line is
    skipped and reported; class indices outside ``0..num_classes-1`` are fatal, all of them
    listed in one :class:`LabelError` (``strict=False``: left in ``report.errors``).
    """
    images_root, labels_root = Path(images_dir), Path(labels_dir)
    if not labels_root.is_dir():  # every image would silently be background
        raise DatasetNotFoundError(f"labels folder not found: {labels_root} (YOLO layout: labels/<split>/x.txt "
                                   f"beside images/<split>/x.jpg; or set the split's 'labels')")
    report = ScanReport(error_title=f"{labels_root}: class indices outside 0..{num_classes - 1} "
                                    f"(the data config names {num_classes} classes)")
    unknown: Dict[str, List[str]] = {}
    stems, paths, all_boxes, all_classes = set(), [], [], []
    for path in list_images(images_root):
        rel = path.relative_to(images_root).with_suffix("")
        stems.add(str(rel))
        if not check_image_file(str(path), report):
            continue
        classes, boxes = _image_labels(path, labels_root / rel.with_suffix(".txt"), num_classes, report, unknown)
        paths.append(str(path))
        all_boxes.append(boxes)
        all_classes.append(classes)
    report.labels_without_image += _orphan_labels(labels_root, stems)
    for file, items in unknown.items():
        report.errors.append(f"{file} {', '.join(items)}")
    counts = [len(b) for b in all_boxes]
    records = RecordStore(paths, np.arange(len(paths)),
                          np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4), np.float32),
                          np.concatenate(all_classes) if all_classes else np.zeros(0, np.int64),
                          counts, None, normalized=True)
    report.images, report.boxes = len(records), int(sum(counts))
    if strict:
        report.raise_errors()
    return YoloLabels(records, report)


def _image_labels(path: Path, label_path: Path, num_classes: int, report: ScanReport,
                  unknown: Dict[str, List[str]]) -> Tuple[np.ndarray, np.ndarray]:
    """One image's usable (classes, xyxy normalised boxes); no label file = background."""
    lines: List[int] = []
    if label_path.is_file():
        classes, boxes, lines = _read_yolo_txt(label_path, num_classes, report, unknown)
    else:
        classes, boxes = np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
    keep = sanitize_boxes(boxes, 1.0, 1.0, lambda i: f"{label_path} line {lines[i]}", report, tol=1e-3)
    if not keep.any():
        report.background_images.append(path.name)
    return classes[keep], boxes[keep]


def _orphan_labels(labels_root: Path, image_stems) -> List[str]:
    """Label files with no image of the same relative name (reported, never read)."""
    return [str(p) for p in sorted(labels_root.rglob("*.txt"))
            if str(p.relative_to(labels_root).with_suffix("")) not in image_stems]


def _read_yolo_txt(path: Path, num_classes: int, report: ScanReport, unknown: Dict[str, List[str]]
                   ) -> Tuple[np.ndarray, np.ndarray, List[int]]:
    """Boxes (xyxy, normalised), classes and line numbers of a label file's usable lines.

    Malformed lines go to ``report.malformed_lines``; class fields that are not a known class
    index (``5``, ``-1``, ``1.5``, ``person``) to ``unknown[file]``.
    """
    classes, boxes, linenos = [], [], []
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        report.malformed_lines.append(f"{path}: cannot read ({e}); the image is kept without boxes")
        lines = []
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        text = line.strip()[:80]
        try:
            cls = float(parts[0])
        except ValueError:
            cls = math.nan
        if not (cls == int(cls) if math.isfinite(cls) else False) or not 0 <= cls < num_classes:
            unknown.setdefault(str(path), []).append(f"line {lineno} class '{parts[0]}'")
            continue
        try:
            coords = [float(v) for v in parts[1:]]
        except ValueError:
            report.malformed_lines.append(f"{path} line {lineno}: not numbers: '{text}'")
            continue
        if len(coords) == 4:
            cx, cy, w, h = coords
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        elif len(coords) >= 6 and len(coords) % 2 == 0:
            xs, ys = coords[0::2], coords[1::2]
            box = [min(xs), min(ys), max(xs), max(ys)]
        else:
            report.malformed_lines.append(f"{path} line {lineno}: expected 'class cx cy w h' (or a "
                                          f"polygon), got {len(parts)} values: '{text}'")
            continue
        classes.append(int(cls))
        boxes.append(box)
        linenos.append(lineno)
    return np.array(classes, np.int64), np.array(boxes, np.float32).reshape(-1, 4), linenos


def yolo_ground_truth(records: RecordStore, names, cat_ids, where: str = "dataset") -> dict:
    """A COCO-style ground truth of YOLO records (normalised boxes scaled by each image's size,
    read from its header; image ids = record ids); an image whose header cannot be read is
    left out with a warning."""
    images, anns = [], []
    for rec in records:
        try:
            h, w = image_size(rec.path)
        except ImageReadError as e:
            log.warning("%s: %s (left out of the ground truth)", where, e)
            continue
        images.append({"id": int(rec.image_id), "file_name": rec.path, "width": w, "height": h})
        for box, cls in zip(rec.boxes, rec.classes):
            x1, y1, x2, y2 = (float(v) for v in box * np.array([w, h, w, h], np.float32))
            anns.append({"id": len(anns) + 1, "image_id": int(rec.image_id),
                         "category_id": int(cat_ids[int(cls)]),
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                         "iscrowd": 0})
    cats = [{"id": int(cid), "name": n} for cid, n in zip(cat_ids, names)]
    return {"images": images, "annotations": anns, "categories": cats}
