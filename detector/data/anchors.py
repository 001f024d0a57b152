"""k-means anchors for a dataset: box sizes as the head sees them (after the letterbox resize),
clustered with distance 1 - IoU of boxes aligned at a corner, and how well anchors fit them.

``cspdet anchors`` (detector/cli/anchors.py) prints them in config form.
"""
from __future__ import annotations

import json
import logging
from typing import Tuple

import numpy as np

log = logging.getLogger("cspdet.data")


def wh_iou(wh: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of (N, 2) sizes against (K, 2) sizes, boxes sharing a corner -> (N, K)."""
    inter = np.minimum(wh[:, None, 0], anchors[None, :, 0]) * np.minimum(wh[:, None, 1], anchors[None, :, 1])
    union = wh[:, None].prod(2) + anchors[None].prod(2) - inter
    return inter / np.maximum(union, 1e-12)


def kmeans_anchors(wh: np.ndarray, k: int = 9, iters: int = 300, seed: int = 0) -> np.ndarray:
    """k-means on box sizes with d = 1 - IoU; k-means++ seeding, median update; sorted by area."""
    wh = np.asarray(wh, dtype=np.float64)
    wh = wh[(wh > 0).all(1)]
    if len(wh) < k:
        raise ValueError(f"need at least k={k} boxes with positive size, got {len(wh)}")
    rng = np.random.default_rng(seed)
    centers = [wh[rng.integers(len(wh))]]
    for _ in range(1, k):  # k-means++: next centre far (in 1 - IoU) from the chosen ones
        d = 1 - wh_iou(wh, np.array(centers)).max(1)
        p = d ** 2
        centers.append(wh[rng.choice(len(wh), p=p / p.sum())] if p.sum() > 0 else wh[rng.integers(len(wh))])
    centers = np.array(centers)
    assign = None
    for _ in range(iters):
        new_assign = wh_iou(wh, centers).argmax(1)
        if assign is not None and (new_assign == assign).all():
            break
        assign = new_assign
        for j in range(k):
            members = wh[assign == j]
            if len(members):
                centers[j] = np.median(members, 0)
    return centers[np.argsort(centers.prod(1))]


def anchor_fitness(wh: np.ndarray, anchors: np.ndarray, ratio_thresh: float = 4.0) -> Tuple[float, float]:
    """(mean best IoU, share of boxes with an anchor within the w/h ratio threshold)."""
    best_iou = wh_iou(wh, anchors).max(1).mean()
    r = wh[:, None] / anchors[None]
    worst = np.maximum(r, 1 / r).max(2)  # (N, K)
    recall = (worst.min(1) < ratio_thresh).mean()
    return float(best_iou), float(recall)


def sizes_from_coco(path: str, img_size: int) -> np.ndarray:
    """Box sizes from a COCO instances JSON, scaled by the letterbox ratio of their image."""
    with open(path, "r", encoding="utf-8") as f:
        data = json.load(f)
    scale = {im["id"]: img_size / max(im["width"], im["height"]) for im in data["images"]}
    wh = [(a["bbox"][2] * scale[a["image_id"]], a["bbox"][3] * scale[a["image_id"]])
          for a in data["annotations"] if not a.get("iscrowd", 0) and a["image_id"] in scale]
    return np.array(wh, dtype=np.float64).reshape(-1, 2)


def sizes_from_yolo(labels_dir: str, images_dir: str, img_size: int) -> np.ndarray:
    """Box sizes from YOLO txt labels (class cx cy w h, normalised), through the project's scan
    (malformed lines skipped and reported), image sizes read from the image headers."""
    from .labels import scan_yolo

    labels = scan_yolo(images_dir, labels_dir, num_classes=2 ** 31)  # any class id: sizes only
    labels.report.log_summary(str(labels_dir))
    return sizes_from_records(labels.records, img_size)


def sizes_from_data_config(data: str, img_size: int) -> np.ndarray:
    """Box sizes of a data config's training split, from the project's label scan."""
    from . import build_dataset

    return sizes_from_records(build_dataset(data, "train", img_size).records, img_size)


def sizes_from_records(records, img_size: int, progress: bool = True) -> np.ndarray:
    """(w, h) of every box after the letterbox resize to ``img_size``; the image header gives
    the size of normalised (YOLO) boxes, as training sees the image (EXIF applied)."""
    from tqdm import tqdm

    from .image_io import ImageReadError, image_size

    wh = []
    for rec in tqdm(records, desc="labels", disable=not progress):
        if not len(rec.boxes):
            continue
        hw = rec.hw
        if rec.normalized or hw is None:
            try:
                hw = image_size(rec.path)
            except ImageReadError as e:
                log.warning("skipping unreadable image: %s", e)
                continue
        boxes = rec.boxes * (np.array([hw[1], hw[0], hw[1], hw[0]]) if rec.normalized else 1)
        wh.append((boxes[:, 2:4] - boxes[:, 0:2]) * img_size / max(hw))
    return np.concatenate(wh, 0) if wh else np.zeros((0, 2))


def fit_anchors(records, img_size: int, levels: int, per_level: int = 3, seed: int = 0,
                ratio_thresh: float = 4.0) -> Tuple[list, float, float, int]:
    """Anchors for a model head from a split's boxes: ``levels`` flat ``[w, h, ...]`` lists of
    ``per_level`` whole-pixel sizes, smallest first (the finest stride), with the mean best IoU,
    the share of boxes matched within ``ratio_thresh`` and the number of boxes used."""
    wh = sizes_from_records(records, img_size, progress=False)
    anchors = np.round(kmeans_anchors(wh, k=levels * per_level, seed=seed)).clip(1)
    anchors = anchors[np.argsort(anchors.prod(1), kind="stable")]   # rounding can swap neighbours
    best_iou, recall = anchor_fitness(wh, anchors, ratio_thresh)
    groups = np.array_split(anchors.astype(int), levels)
    return [[int(v) for wh_ in g for v in wh_] for g in groups], best_iou, recall, len(wh)


def format_anchors(anchors: np.ndarray, levels: int) -> str:
    """``anchors: [[w, h, ...], ...]``: the anchors split over ``levels`` output levels, smallest
    first, as a ``model.head.anchors`` YAML line."""
    groups = np.array_split(np.round(anchors).astype(int), levels)
    return "anchors: [" + ", ".join("[" + ", ".join(f"{w}, {h}" for w, h in g) + "]" for g in groups) + "]"
