"""Scan a split's labels (COCO instances JSON or YOLO txt) into per-image records.

Everything that can be decided from the label files is decided here, once, at load time:
unknown category ids / class indices are errors naming the file and the id; boxes outside the
image are clipped; empty, negative or NaN boxes are dropped with a warning; images without
labels are kept as background; label files without an image and missing or zero-byte image
files are reported and left out. The :class:`ScanReport` keeps every case for
``tools/check_data.py``.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .image_io import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


class LabelError(ValueError):
    """Labels that cannot be trained on without guessing (unknown class, unparsable line)."""


@dataclass
class ImageRecord:
    """One image and its training boxes.

    ``boxes`` are xyxy, in pixels of the frame given by ``hw`` for COCO, or normalised to
    [0, 1] for YOLO txt (the image size is only known once the image is decoded).
    """
    path: str
    image_id: int
    boxes: np.ndarray                     # (n, 4) float32
    classes: np.ndarray                   # (n,) int64 contiguous class indices
    hw: Optional[Tuple[int, int]] = None  # (height, width) recorded by the labels (COCO)
    normalized: bool = False


@dataclass
class ScanReport:
    """What the scan found; warnings are logged, this keeps the details."""
    images: int = 0
    boxes: int = 0
    background_images: List[str] = field(default_factory=list)
    missing_images: List[str] = field(default_factory=list)
    empty_images: List[str] = field(default_factory=list)
    labels_without_image: List[str] = field(default_factory=list)
    clipped_boxes: List[str] = field(default_factory=list)
    dropped_boxes: List[str] = field(default_factory=list)
    crowd_boxes: int = 0

    def log_summary(self, name: str) -> None:
        log.info("%s: %d images, %d boxes, %d background images, %d crowd boxes (ignored in "
                 "training, kept for evaluation)", name, self.images, self.boxes,
                 len(self.background_images), self.crowd_boxes)
        for items, what in ((self.missing_images, "image files missing (skipped)"),
                            (self.empty_images, "zero-byte image files (skipped)"),
                            (self.labels_without_image, "label files without an image (ignored)"),
                            (self.clipped_boxes, "boxes clipped to the image"),
                            (self.dropped_boxes, "boxes dropped (zero-area, negative or NaN)")):
            if items:
                shown = "; ".join(items[:5]) + (f"; ... ({len(items) - 5} more)" if len(items) > 5 else "")
                log.warning("%s: %d %s: %s", name, len(items), what, shown)


def sanitize_boxes(boxes: np.ndarray, width: float, height: float, where: Sequence[str],
                   report: ScanReport, tol: float = 0.0) -> np.ndarray:
    """Clip xyxy boxes to [0, width] x [0, height]; return the mask of boxes to keep.

    Boxes with NaN/inf coordinates, or with zero or negative size before or after clipping,
    are dropped and recorded; boxes that stuck out by more than ``tol`` (rounding in label
    files) are recorded as clipped.
    """
    keep = np.ones(len(boxes), bool)
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            report.dropped_boxes.append(f"{where[i]}: non-finite box {list(np.round(box, 3))}")
            keep[i] = False
            continue
        if x2 <= x1 or y2 <= y1:
            report.dropped_boxes.append(f"{where[i]}: zero or negative size {list(np.round(box, 3))}")
            keep[i] = False
            continue
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
        if cx2 <= cx1 or cy2 <= cy1:
            report.dropped_boxes.append(f"{where[i]}: outside the image {list(np.round(box, 3))}")
            keep[i] = False
            continue
        if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
            if max(abs(cx1 - x1), abs(cy1 - y1), abs(cx2 - x2), abs(cy2 - y2)) > tol:
                report.clipped_boxes.append(f"{where[i]}")
            boxes[i] = (cx1, cy1, cx2, cy2)
    return keep


def _check_image_file(path: Path, report: ScanReport) -> bool:
    try:
        size = path.stat().st_size
    except OSError:
        report.missing_images.append(str(path))
        return False
    if size == 0:
        report.empty_images.append(str(path))
        return False
    return True


# ---------------------------------------------------------------------------------------- COCO
@dataclass
class CocoLabels:
    records: List[ImageRecord]
    names: List[str]
    cat_ids: List[int]        # contiguous index -> COCO category id
    gt: dict                  # compact instances dict for pycocotools (this split's images)
    report: ScanReport


def scan_coco(annotations: str, images_dir: str, names: Sequence[str] = ()) -> CocoLabels:
    """Read a COCO instances JSON. Category ids map to contiguous indices by sorted id.

    Crowd annotations are not training targets but stay in ``gt`` so evaluation ignores
    detections on them. ``names`` (from the data YAML), when given, must match the JSON.
    """
    ann_path = Path(annotations)
    with open(ann_path, "r", encoding="utf-8") as f:
        data = json.load(f)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise LabelError(f"{ann_path}: not a COCO instances file (no '{key}' list)")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    cat_ids = [int(c["id"]) for c in cats]
    json_names = [str(c["name"]) for c in cats]
    if names and list(names) != json_names:
        diff = [(i, a, b) for i, (a, b) in enumerate(zip(names, json_names)) if a != b][:3]
        raise LabelError(f"{ann_path}: the data config's {len(names)} class names differ from the "
                         f"JSON's {len(json_names)} categories (sorted by id); first differences "
                         f"(index, config, json): {diff}")
    cat_to_label = {cid: i for i, cid in enumerate(cat_ids)}

    report = ScanReport()
    images = {}
    for im in data["images"]:
        images[int(im["id"])] = im
    per_image: Dict[int, list] = {i: [] for i in images}
    for ann in data["annotations"]:
        image_id = int(ann["image_id"])
        if image_id not in images:
            raise LabelError(f"{ann_path}: annotation id {ann.get('id')} refers to image id "
                             f"{image_id}, which is not in the 'images' list")
        cid = int(ann["category_id"])
        if cid not in cat_to_label:
            raise LabelError(f"{ann_path}: annotation id {ann.get('id')} (image "
                             f"{images[image_id].get('file_name')}) has unknown category id {cid}; "
                             f"known ids: {cat_ids[:10]}{' ...' if len(cat_ids) > 10 else ''}")
        per_image[image_id].append(ann)

    images_root = Path(images_dir)
    records: List[ImageRecord] = []
    gt_images, gt_anns = [], []
    for image_id, im in images.items():
        path = images_root / im["file_name"]
        if not _check_image_file(path, report):
            continue
        width, height = float(im["width"]), float(im["height"])
        anns = per_image[image_id]
        train_anns = [a for a in anns if not a.get("iscrowd", 0)]
        report.crowd_boxes += len(anns) - len(train_anns)
        boxes = np.array([_xywh_to_xyxy(a.get("bbox")) for a in train_anns], np.float32).reshape(-1, 4)
        where = [f"{im['file_name']} annotation id {a.get('id')}" for a in train_anns]
        keep = sanitize_boxes(boxes, width, height, where, report, tol=0.5)
        classes = np.array([cat_to_label[int(a["category_id"])] for a in train_anns], np.int64)
        boxes, classes = boxes[keep], classes[keep]
        kept_ids = {id(a) for a, k in zip(train_anns, keep) if k}
        for a in anns:
            if a.get("iscrowd", 0) or id(a) in kept_ids:
                x, y, w, h = (float(v) for v in a["bbox"])
                gt_anns.append({"id": int(a["id"]), "image_id": image_id,
                                "category_id": int(a["category_id"]), "bbox": [x, y, w, h],
                                "area": float(a.get("area", w * h)),
                                "iscrowd": int(a.get("iscrowd", 0))})
        gt_images.append({"id": image_id, "file_name": im["file_name"],
                          "width": int(im["width"]), "height": int(im["height"])})
        if len(boxes) == 0:
            report.background_images.append(im["file_name"])
        report.boxes += len(boxes)
        records.append(ImageRecord(str(path), image_id, boxes, classes, (int(height), int(width))))
    report.images = len(records)
    if gt_anns and min(a["id"] for a in gt_anns) < 1:
        for new_id, a in enumerate(gt_anns, 1):  # pycocotools treats annotation id 0 as "unmatched"
            a["id"] = new_id
    gt = {"images": gt_images, "annotations": gt_anns,
          "categories": [{"id": c["id"], "name": c["name"], "supercategory": c.get("supercategory", "")}
                         for c in cats]}
    return CocoLabels(records, json_names, cat_ids, gt, report)


def _xywh_to_xyxy(bbox) -> List[float]:
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        return [math.nan] * 4
    return [x, y, x + w, y + h]


# ---------------------------------------------------------------------------------------- YOLO
@dataclass
class YoloLabels:
    records: List[ImageRecord]
    report: ScanReport


def list_images(images_dir: Path) -> List[Path]:
    return sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def scan_yolo(images_dir: str, labels_dir: str, num_classes: int) -> YoloLabels:
    """Pair ``images/**/x.jpg`` with ``labels/**/x.txt`` (``class cx cy w h``, normalised).

    Lines with more than 5 numbers are polygons (YOLO segmentation labels): their box is
    their extent. Image ids are the indices in the sorted image list.
    """
    images_root, labels_root = Path(images_dir), Path(labels_dir)
    report = ScanReport()
    image_paths = list_images(images_root)
    stems = set()
    records: List[ImageRecord] = []
    for path in image_paths:
        rel = path.relative_to(images_root).with_suffix("")
        stems.add(str(rel))
        label_path = labels_root / rel.with_suffix(".txt")
        if not _check_image_file(path, report):
            continue
        if label_path.is_file():
            classes, boxes = _read_yolo_txt(label_path, num_classes)
        else:
            classes, boxes = np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
        where = [f"{label_path.name} line {i + 1}" for i in range(len(boxes))]
        keep = sanitize_boxes(boxes, 1.0, 1.0, where, report, tol=1e-3)
        boxes, classes = boxes[keep], classes[keep]
        if len(boxes) == 0:
            report.background_images.append(path.name)
        report.boxes += len(boxes)
        records.append(ImageRecord(str(path), len(records), boxes, classes, None, normalized=True))
    if labels_root.is_dir():
        for label_path in sorted(labels_root.rglob("*.txt")):
            if str(label_path.relative_to(labels_root).with_suffix("")) not in stems:
                report.labels_without_image.append(str(label_path))
    report.images = len(records)
    return YoloLabels(records, report)


def _read_yolo_txt(path: Path, num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    classes, boxes = [], []
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        try:
            values = [float(v) for v in parts]
        except ValueError:
            raise LabelError(f"{path} line {lineno}: not numbers: '{line.strip()}'") from None
        cls = values[0]
        if not math.isfinite(cls) or cls != int(cls) or not 0 <= cls < num_classes:
            raise LabelError(f"{path} line {lineno}: class index {parts[0]} is not in 0..{num_classes - 1} "
                             f"(the data config names {num_classes} classes)")
        coords = values[1:]
        if len(coords) == 4:
            cx, cy, w, h = coords
            box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        elif len(coords) >= 6 and len(coords) % 2 == 0:
            xs, ys = coords[0::2], coords[1::2]
            box = [min(xs), min(ys), max(xs), max(ys)]
        else:
            raise LabelError(f"{path} line {lineno}: expected 'class cx cy w h' (or a polygon), "
                             f"got {len(parts)} values")
        classes.append(int(cls))
        boxes.append(box)
    return np.array(classes, np.int64), np.array(boxes, np.float32).reshape(-1, 4)
