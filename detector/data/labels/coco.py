"""COCO instances JSON -> records and ground truth, in steps: categories, images, annotation
columns, matching, training boxes, ground truth.

Fatal (one :class:`LabelError` naming every case): unknown category ids, annotations of images
that are not in the JSON, names that differ from the JSON, malformed entries. Skipped and
reported: missing and zero-byte images, empty / negative / NaN boxes. Clipped and reported:
boxes outside the image. Crowd boxes are not training targets but stay in the ground truth.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..records import PackedStrings, RecordStore, release_freed_memory
from .report import LabelError, ScanReport, check_image_file, sanitize_boxes


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


@dataclass
class _Images:
    ids: np.ndarray           # (n,) int64
    file_names: List[str]
    hw: np.ndarray            # (n, 2) int64
    present: np.ndarray = None  # (n,) bool: the file exists and is not empty


@dataclass
class _Annotations:
    ids: np.ndarray
    image_ids: np.ndarray
    cat_ids: np.ndarray
    bbox: np.ndarray          # (m, 4) xywh
    crowd: np.ndarray         # (m,) bool
    area: np.ndarray
    image_pos: np.ndarray = None  # index into _Images, -1 when the image id is unknown
    label: np.ndarray = None      # contiguous class index
    usable: np.ndarray = None     # known image and known category


def _scan_coco(annotations: str, images_dir: str, names: Sequence[str]) -> CocoLabels:
    ann_path = Path(annotations)
    data = _load_json(ann_path)
    report = ScanReport(error_title=f"{ann_path}: labels that cannot be used")
    cats = _read_categories(data["categories"], names, report)
    images = _read_images(data["images"], report)
    anns = _read_annotation_columns(data["annotations"])
    del data
    cat_ids = np.array([int(c["id"]) for c in cats], np.int64)
    _match_annotations(anns, images, cat_ids, report)
    images.present = np.array([check_image_file(os.path.join(str(images_dir), f), report)
                               for f in images.file_names], bool).reshape(-1)
    train_idx, boxes = _training_boxes(anns, images, report)
    records, kept = _records(anns, images, train_idx, boxes, str(images_dir), report)
    gt = _ground_truth(anns, images, kept, train_idx, cats)
    return CocoLabels(records, [str(c.get("name", c["id"])) for c in cats],
                      [int(c) for c in cat_ids], gt, report)


def _read_categories(categories: list, names: Sequence[str], report: ScanReport) -> List[dict]:
    """The categories sorted by id; malformed ones and a mismatch with ``names`` are errors."""
    cats = []
    for c in categories:
        if isinstance(c, dict) and _int_column([c.get("id")])[0] != _BAD_INT:
            cats.append(c)
        else:
            report.errors.append(f"category without a whole-number 'id': {str(c)[:100]}")
    cats.sort(key=lambda c: int(c["id"]))
    json_names = [str(c.get("name", c["id"])) for c in cats]
    if names and list(names) != json_names:
        diff = [(i, a, b) for i, (a, b) in enumerate(zip(names, json_names)) if a != b]
        report.errors.append(
            f"the data config's {len(names)} class names differ from the JSON's {len(json_names)} "
            f"categories (sorted by id); differences (index, config, json): {diff[:10]}"
            + (f" ... ({len(diff) - 10} more)" if len(diff) > 10 else ""))
    return cats


def _read_images(entries: list, report: ScanReport) -> _Images:
    """Id, file name and size of each 'images' entry; a malformed entry or a repeated id is an
    error and the rest is still read."""
    images: List[Tuple[int, str, int, int]] = []
    for k, im in enumerate(entries):
        ok = isinstance(im, dict) and isinstance(im.get("file_name"), str)
        if ok:
            values = _int_column([im.get("id"), im.get("width"), im.get("height")])
            ok = values[0] != _BAD_INT and (values[1:] > 0).all()
        if not ok:
            report.errors.append(f"'images' entry {k} needs 'id', 'file_name' and positive 'width' "
                                 f"and 'height': {str(im)[:120]}")
            continue
        images.append((int(values[0]), im["file_name"], int(values[2]), int(values[1])))
    ids = np.array([i[0] for i in images], np.int64)
    sorted_ids = np.sort(ids)
    for d in np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1]):
        report.errors.append(f"image id {int(sorted_ids[d])} is used by more than one 'images' entry")
    return _Images(ids, [i[1] for i in images],
                   np.array([(i[2], i[3]) for i in images], np.int64).reshape(-1, 2))


def _read_annotation_columns(entries: list) -> _Annotations:
    anns = [a if isinstance(a, dict) else {} for a in entries]
    return _Annotations(
        ids=_int_column([a.get("id", k + 1) for k, a in enumerate(anns)]),
        image_ids=_int_column([a.get("image_id") for a in anns]),
        cat_ids=_int_column([a.get("category_id") for a in anns]),
        bbox=_bbox_column([a.get("bbox") for a in anns]),
        crowd=np.array([bool(a.get("iscrowd", 0)) for a in anns], bool),
        area=np.array([a.get("area") if isinstance(a.get("area"), (int, float)) else np.nan
                       for a in anns], np.float64))


def _lookup(sorted_keys: np.ndarray, keys: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Position of each key in ``sorted_keys`` and whether it is there."""
    if not len(sorted_keys):
        return np.zeros(len(keys), np.int64), np.zeros(len(keys), bool)
    pos = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
    return pos, sorted_keys[pos] == keys


def _match_annotations(anns: _Annotations, images: _Images, cat_ids: np.ndarray,
                       report: ScanReport) -> None:
    """Each annotation's image and class; unknown image ids and category ids are errors."""
    order = np.argsort(images.ids, kind="stable")
    pos, known_img = _lookup(images.ids[order], anns.image_ids)
    anns.image_pos = np.where(known_img, order[pos] if len(order) else 0, -1)
    anns.label, known_cat = _lookup(cat_ids, anns.cat_ids)
    anns.usable = known_img & known_cat
    bad_img = np.flatnonzero(~known_img)
    if len(bad_img):
        ids = sorted({int(anns.image_ids[k]) if anns.image_ids[k] != _BAD_INT else None
                      for k in bad_img}, key=str)
        report.errors.append(
            f"{len(bad_img)} annotations refer to image ids that are not in the 'images' list: "
            f"image ids {ids[:20]}{' ...' if len(ids) > 20 else ''} (annotation ids "
            f"{[int(anns.ids[k]) for k in bad_img[:10]]}{' ...' if len(bad_img) > 10 else ''})")
    bad_cat = np.flatnonzero(~known_cat & known_img)
    if len(bad_cat):
        per_file: Dict[str, List[str]] = {}
        for k in bad_cat:
            cid = "missing" if anns.cat_ids[k] == _BAD_INT else int(anns.cat_ids[k])
            per_file.setdefault(images.file_names[anns.image_pos[k]], []).append(
                f"annotation id {int(anns.ids[k])} category id {cid}")
        shown_ids = [int(c) for c in cat_ids[:20]]
        report.errors.append(
            f"{len(bad_cat)} annotations in {len(per_file)} images have unknown category ids "
            f"(known ids: {shown_ids}{' ...' if len(cat_ids) > 20 else ''}):")
        report.errors.extend(f"  {f}: {', '.join(v)}" for f, v in per_file.items())


def _training_boxes(anns: _Annotations, images: _Images, report: ScanReport
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """Indices and xyxy boxes of the training targets (usable, not crowd, image present),
    sanitised against the image's recorded size and sorted by image."""
    if not len(anns.image_pos):
        return np.zeros(0, np.int64), np.zeros((0, 4), np.float32)
    on_present = images.present[np.maximum(anns.image_pos, 0)]
    report.crowd_boxes = int((anns.usable & anns.crowd & on_present).sum())
    train_idx = np.flatnonzero(anns.usable & ~anns.crowd & on_present)
    xywh = anns.bbox[train_idx]
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1).astype(np.float32)
    hw = images.hw[anns.image_pos[train_idx]]
    keep = sanitize_boxes(
        boxes, hw[:, 1], hw[:, 0],
        lambda i: f"{images.file_names[anns.image_pos[train_idx[i]]]} annotation id "
                  f"{int(anns.ids[train_idx[i]])}",
        report, tol=0.5)
    train_idx, boxes = train_idx[keep], boxes[keep]
    by_image = np.argsort(anns.image_pos[train_idx], kind="stable")
    return train_idx[by_image], boxes[by_image]


def _records(anns: _Annotations, images: _Images, train_idx: np.ndarray, boxes: np.ndarray,
             images_dir: str, report: ScanReport) -> Tuple[RecordStore, np.ndarray]:
    """The present images with their training boxes; returns them and the kept image indices."""
    counts_all = np.bincount(anns.image_pos[train_idx], minlength=len(images.ids))
    kept = np.flatnonzero(images.present)
    counts = counts_all[kept]
    records = RecordStore(PackedStrings(os.path.join(images_dir, images.file_names[i]) for i in kept),
                          images.ids[kept], boxes, anns.label[train_idx], counts, images.hw[kept],
                          normalized=False)
    report.images = len(records)
    report.boxes = int(len(boxes))
    report.background_images = [images.file_names[i] for i in kept[counts == 0]]
    return records, kept


def _ground_truth(anns: _Annotations, images: _Images, kept: np.ndarray, train_idx: np.ndarray,
                  cats: List[dict]) -> CocoGroundTruth:
    """Evaluation's ground truth: the kept training boxes and the crowd boxes."""
    gt_mask = np.zeros(len(anns.ids), bool)
    gt_mask[train_idx] = True
    if len(anns.image_pos):
        gt_mask |= anns.usable & anns.crowd & images.present[np.maximum(anns.image_pos, 0)]
    gt_idx = np.flatnonzero(gt_mask)
    gt_ids = anns.ids[gt_idx]
    if len(gt_ids) and gt_ids.min() < 1:  # pycocotools treats annotation id 0 as "unmatched"
        gt_ids = np.arange(1, len(gt_ids) + 1, dtype=np.int64)
    bbox = anns.bbox[gt_idx]
    area = anns.area[gt_idx]
    area = np.where(np.isfinite(area), area, bbox[:, 2] * bbox[:, 3])
    return CocoGroundTruth(images.ids[kept], PackedStrings(images.file_names[i] for i in kept),
                           images.hw[kept], gt_ids, anns.image_ids[gt_idx], anns.cat_ids[gt_idx],
                           bbox, area, anns.crowd[gt_idx].astype(np.uint8),
                           [{"id": int(c["id"]), "name": str(c.get("name", c["id"])),
                             "supercategory": c.get("supercategory", "")} for c in cats])
