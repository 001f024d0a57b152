"""Scan a split's labels (COCO instances JSON or YOLO txt) into a :class:`RecordStore`.

Everything that can be decided from the label files is decided here, once, at load time, and
the whole split is read before anything is refused, so one run reports every problem:

* fatal (a :class:`LabelError` naming every offending file): unknown category ids / class
  indices, annotations of images that are not in the JSON, names that differ from the JSON;
* skipped and reported: malformed YOLO lines (that line only; the image keeps its other
  boxes), empty, negative or NaN boxes, missing and zero-byte image files, label files
  without an image;
* fixed and reported: boxes outside the image are clipped;
* kept: images without labels (background).

The :class:`ScanReport` keeps every case for ``cspdet check-data``.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from .config import DatasetNotFoundError
from .image_io import IMAGE_SUFFIXES
from .records import ImageRecord, PackedStrings, RecordStore, release_freed_memory  # noqa: F401

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
    errors: List[str] = field(default_factory=list)
    error_title: str = ""

    def log_summary(self, name: str) -> None:
        log.info("%s: %d images, %d boxes, %d background images, %d crowd boxes (ignored in "
                 "training, kept for evaluation)", name, self.images, self.boxes,
                 len(self.background_images), self.crowd_boxes)
        for items, what in ((self.missing_images, "image files missing (skipped)"),
                            (self.empty_images, "zero-byte image files (skipped)"),
                            (self.labels_without_image, "label files without an image (ignored)"),
                            (self.malformed_lines, "malformed label lines (skipped)"),
                            (self.clipped_boxes, "boxes clipped to the image"),
                            (self.dropped_boxes, "boxes dropped (zero-area, negative or NaN)")):
            if items:
                log.warning("%s: %d %s: %s", name, len(items), what, _shown(items))

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


def _check_image_file(path: str, report: ScanReport) -> bool:
    try:
        size = os.stat(path).st_size
    except OSError:
        report.missing_images.append(str(path))
        return False
    if size == 0:
        report.empty_images.append(str(path))
        return False
    return True


# ---------------------------------------------------------------------------------------- COCO
@dataclass
class CocoGroundTruth:
    """A split's COCO ground truth (crowd boxes included) as arrays; ``to_dict`` for pycocotools.

    Kept as arrays for the reason of :mod:`detector.data.records`: a training dataset holds it
    in every worker, which never reads it.
    """
    image_ids: np.ndarray        # (n,) int64
    file_names: PackedStrings
    hw: np.ndarray               # (n, 2) int64 (height, width)
    ann_ids: np.ndarray          # (m,) int64
    ann_image_ids: np.ndarray    # (m,) int64
    ann_cat_ids: np.ndarray      # (m,) int64
    ann_bbox: np.ndarray         # (m, 4) float64 xywh as in the JSON
    ann_area: np.ndarray         # (m,) float64
    ann_crowd: np.ndarray        # (m,) uint8
    categories: List[dict]

    def to_dict(self) -> dict:
        images = [{"id": int(i), "file_name": f, "width": int(hw[1]), "height": int(hw[0])}
                  for i, f, hw in zip(self.image_ids, self.file_names, self.hw)]
        anns = [{"id": int(a), "image_id": int(im), "category_id": int(c), "bbox": [float(v) for v in b],
                 "area": float(ar), "iscrowd": int(cr)}
                for a, im, c, b, ar, cr in zip(self.ann_ids, self.ann_image_ids, self.ann_cat_ids,
                                               self.ann_bbox, self.ann_area, self.ann_crowd)]
        return {"images": images, "annotations": anns, "categories": [dict(c) for c in self.categories]}


@dataclass
class CocoLabels:
    records: RecordStore
    names: List[str]
    cat_ids: List[int]        # contiguous index -> COCO category id
    gt: CocoGroundTruth       # this split's images, for pycocotools
    report: ScanReport


_BAD_INT = np.iinfo(np.int64).min


def _int_column(values: list) -> np.ndarray:
    """Integers of a JSON column; anything that is not a whole number becomes ``_BAD_INT``."""
    try:
        out = np.array(values, np.float64)
        if np.isfinite(out).all() and (out == np.round(out)).all():
            return out.astype(np.int64)
    except (TypeError, ValueError):
        pass
    out = np.empty(len(values), np.int64)
    for k, v in enumerate(values):
        try:
            f = float(v)
            out[k] = int(f) if math.isfinite(f) and f == int(f) and not isinstance(v, bool) else _BAD_INT
        except (TypeError, ValueError):
            out[k] = _BAD_INT
    return out


def _bbox_column(values: list) -> np.ndarray:
    """(m, 4) float64 xywh; a missing or malformed bbox becomes NaN (dropped with a message)."""
    try:
        out = np.array(values, np.float64)
        if out.shape == (len(values), 4):
            return out
    except (TypeError, ValueError):
        pass
    out = np.full((len(values), 4), np.nan)
    for k, b in enumerate(values):
        try:
            x, y, w, h = (float(v) for v in b)
            out[k] = (x, y, w, h)
        except (TypeError, ValueError):
            pass
    return out


def _load_json(path: Path) -> dict:
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise LabelError(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise LabelError(f"{path}: not a UTF-8 text file ({e})") from None
    except OSError as e:
        raise LabelError(f"{path}: cannot read ({e})") from None
    if not isinstance(data, dict):
        raise LabelError(f"{path}: not a COCO instances file (a JSON {type(data).__name__}, not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise LabelError(f"{path}: not a COCO instances file (no '{key}' list)")
    return data


def scan_coco(annotations: str, images_dir: str, names: Sequence[str] = (), strict: bool = True) -> CocoLabels:
    """Read a COCO instances JSON. Category ids map to contiguous indices by sorted id.

    Crowd annotations are not training targets but stay in ``gt`` so evaluation ignores
    detections on them. ``names`` (from the data YAML), when given, must match the JSON.
    ``strict=False`` returns instead of raising the fatal problems (they are in
    ``report.errors``; the records then leave out the annotations concerned).
    """
    try:
        labels = _scan_coco(annotations, images_dir, names)
    finally:  # the parsed JSON and the scan's temporaries are freed by now (see the function)
        release_freed_memory()
    if strict:
        labels.report.raise_errors()
    return labels


def _scan_coco(annotations: str, images_dir: str, names: Sequence[str]) -> CocoLabels:
    ann_path = Path(annotations)
    data = _load_json(ann_path)
    report = ScanReport(error_title=f"{ann_path}: labels that cannot be used")
    cats, bad_cats = [], []
    for c in data["categories"]:
        if isinstance(c, dict) and _int_column([c.get("id")])[0] != _BAD_INT:
            cats.append(c)
        else:
            bad_cats.append(c)
    for c in bad_cats:
        report.errors.append(f"category without a whole-number 'id': {str(c)[:100]}")
    cats.sort(key=lambda c: int(c["id"]))
    cat_ids = np.array([int(c["id"]) for c in cats], np.int64)
    json_names = [str(c.get("name", c["id"])) for c in cats]
    if names and list(names) != json_names:
        diff = [(i, a, b) for i, (a, b) in enumerate(zip(names, json_names)) if a != b]
        report.errors.append(
            f"the data config's {len(names)} class names differ from the JSON's {len(json_names)} "
            f"categories (sorted by id); differences (index, config, json): {diff[:10]}"
            + (f" ... ({len(diff) - 10} more)" if len(diff) > 10 else ""))

    # images: id, file name, size; a malformed entry is an error, the rest still scanned
    images = []
    for k, im in enumerate(data["images"]):
        ok = isinstance(im, dict) and isinstance(im.get("file_name"), str)
        if ok:
            values = _int_column([im.get("id"), im.get("width"), im.get("height")])
            ok = values[0] != _BAD_INT and (values[1:] > 0).all()
        if not ok:
            report.errors.append(f"'images' entry {k} needs 'id', 'file_name' and positive 'width' "
                                 f"and 'height': {str(im)[:120]}")
            continue
        images.append((int(values[0]), im["file_name"], int(values[2]), int(values[1])))
    img_ids = np.array([i[0] for i in images], np.int64)
    file_names = [i[1] for i in images]
    img_hw = np.array([(i[2], i[3]) for i in images], np.int64).reshape(-1, 2)
    order = np.argsort(img_ids, kind="stable")
    sorted_ids = img_ids[order]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    for d in dup:
        report.errors.append(f"image id {int(sorted_ids[d])} is used by more than one 'images' entry")

    # annotations, as columns
    anns = [a if isinstance(a, dict) else {} for a in data["annotations"]]
    a_ids = _int_column([a.get("id", k + 1) for k, a in enumerate(anns)])
    a_img = _int_column([a.get("image_id") for a in anns])
    a_cat = _int_column([a.get("category_id") for a in anns])
    a_bbox = _bbox_column([a.get("bbox") for a in anns])
    a_crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], bool)
    a_area = np.array([a.get("area") if isinstance(a.get("area"), (int, float)) else np.nan
                       for a in anns], np.float64)
    del anns, data

    pos = np.searchsorted(sorted_ids, a_img)
    pos = np.clip(pos, 0, max(len(sorted_ids) - 1, 0))
    known_img = (sorted_ids[pos] == a_img) if len(sorted_ids) else np.zeros(len(a_img), bool)
    a_pos = np.where(known_img, order[pos] if len(order) else 0, -1)   # index into ``images``
    label = np.searchsorted(cat_ids, a_cat)
    label = np.clip(label, 0, max(len(cat_ids) - 1, 0))
    known_cat = (cat_ids[label] == a_cat) if len(cat_ids) else np.zeros(len(a_cat), bool)

    bad_img = np.flatnonzero(~known_img)
    if len(bad_img):
        ids = sorted({int(a_img[k]) if a_img[k] != _BAD_INT else None for k in bad_img}, key=str)
        report.errors.append(
            f"{len(bad_img)} annotations refer to image ids that are not in the 'images' list: "
            f"image ids {ids[:20]}{' ...' if len(ids) > 20 else ''} (annotation ids "
            f"{[int(a_ids[k]) for k in bad_img[:10]]}{' ...' if len(bad_img) > 10 else ''})")
    bad_cat = np.flatnonzero(~known_cat & known_img)
    if len(bad_cat):
        per_file: Dict[str, List[str]] = {}
        for k in bad_cat:
            cid = "missing" if a_cat[k] == _BAD_INT else int(a_cat[k])
            per_file.setdefault(file_names[a_pos[k]], []).append(f"annotation id {int(a_ids[k])} "
                                                                 f"category id {cid}")
        shown_ids = [int(c) for c in cat_ids[:20]]
        report.errors.append(
            f"{len(bad_cat)} annotations in {len(per_file)} images have unknown category ids "
            f"(known ids: {shown_ids}{' ...' if len(cat_ids) > 20 else ''}):")
        report.errors.extend(f"  {f}: {', '.join(v)}" for f, v in per_file.items())
    usable = known_img & known_cat

    # image files
    images_root = str(images_dir)
    paths = [os.path.join(images_root, f) for f in file_names]
    present = np.array([_check_image_file(p, report) for p in paths], bool).reshape(-1)

    # training boxes: not crowd, of a present image, sanitised against its recorded size
    use = usable & ~a_crowd & present[np.maximum(a_pos, 0)] if len(a_pos) else np.zeros(0, bool)
    report.crowd_boxes = int((usable & a_crowd & present[np.maximum(a_pos, 0)]).sum()) if len(a_pos) else 0
    train_idx = np.flatnonzero(use)
    xywh = a_bbox[train_idx]
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1).astype(np.float32)
    hw = img_hw[a_pos[train_idx]]
    keep = sanitize_boxes(
        boxes, hw[:, 1], hw[:, 0],
        lambda i: f"{file_names[a_pos[train_idx[i]]]} annotation id {int(a_ids[train_idx[i]])}",
        report, tol=0.5)
    train_idx, boxes = train_idx[keep], boxes[keep]
    by_image = np.argsort(a_pos[train_idx], kind="stable")
    train_idx, boxes = train_idx[by_image], boxes[by_image]
    counts_all = np.bincount(a_pos[train_idx], minlength=len(images))
    kept_images = np.flatnonzero(present)
    counts = counts_all[kept_images]
    records = RecordStore(PackedStrings(paths[i] for i in kept_images), img_ids[kept_images], boxes,
                          label[train_idx], counts, img_hw[kept_images], normalized=False)
    report.images = len(records)
    report.boxes = int(len(boxes))
    report.background_images = [file_names[i] for i in kept_images[counts == 0]]

    # ground truth for evaluation: the kept training boxes and the crowd boxes
    gt_mask = np.zeros(len(a_ids), bool)
    gt_mask[train_idx] = True
    if len(a_pos):
        gt_mask |= usable & a_crowd & present[np.maximum(a_pos, 0)]
    gt_idx = np.flatnonzero(gt_mask)
    gt_ids = a_ids[gt_idx]
    if len(gt_ids) and gt_ids.min() < 1:  # pycocotools treats annotation id 0 as "unmatched"
        gt_ids = np.arange(1, len(gt_ids) + 1, dtype=np.int64)
    bbox = a_bbox[gt_idx]
    area = a_area[gt_idx]
    area = np.where(np.isfinite(area), area, bbox[:, 2] * bbox[:, 3])
    gt = CocoGroundTruth(img_ids[kept_images], PackedStrings(file_names[i] for i in kept_images),
                         img_hw[kept_images], gt_ids, a_img[gt_idx], a_cat[gt_idx], bbox, area,
                         a_crowd[gt_idx].astype(np.uint8),
                         [{"id": int(c["id"]), "name": str(c.get("name", c["id"])),
                           "supercategory": c.get("supercategory", "")} for c in cats])
    return CocoLabels(records, json_names, [int(c) for c in cat_ids], gt, report)


# ---------------------------------------------------------------------------------------- YOLO
@dataclass
class YoloLabels:
    records: RecordStore
    report: ScanReport


def list_images(images_dir: Path) -> List[Path]:
    return sorted(p for p in Path(images_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


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
    stems = set()
    paths, all_boxes, all_classes, counts = [], [], [], []
    for path in list_images(images_root):
        rel = path.relative_to(images_root).with_suffix("")
        stems.add(str(rel))
        label_path = labels_root / rel.with_suffix(".txt")
        if not _check_image_file(str(path), report):
            continue
        lines: List[int] = []
        if label_path.is_file():
            classes, boxes, lines = _read_yolo_txt(label_path, num_classes, report, unknown)
        else:
            classes, boxes = np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
        keep = sanitize_boxes(boxes, 1.0, 1.0, lambda i: f"{label_path} line {lines[i]}", report, tol=1e-3)
        boxes, classes = boxes[keep], classes[keep]
        if len(boxes) == 0:
            report.background_images.append(path.name)
        paths.append(str(path))
        all_boxes.append(boxes)
        all_classes.append(classes)
        counts.append(len(boxes))
    if labels_root.is_dir():
        for label_path in sorted(labels_root.rglob("*.txt")):
            if str(label_path.relative_to(labels_root).with_suffix("")) not in stems:
                report.labels_without_image.append(str(label_path))
    for file, items in unknown.items():
        report.errors.append(f"{file} {', '.join(items)}")
    records = RecordStore(paths, np.arange(len(paths)),
                          np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4), np.float32),
                          np.concatenate(all_classes) if all_classes else np.zeros(0, np.int64),
                          counts, None, normalized=True)
    report.images = len(records)
    report.boxes = int(sum(counts))
    if strict:
        report.raise_errors()
    return YoloLabels(records, report)


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
