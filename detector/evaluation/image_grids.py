"""Validation images with the ground truth beside the predictions: where the model fails, by eye.

Each image appears twice side by side, ground truth on the left and the detections kept at the
threshold in use on the right, in the class colours of :func:`detector.drawing.class_color`.
Labels are placed around their box where they overlap no label already drawn (above, inside,
below, then on the right edge), so that crowded images stay readable.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from ..data.image_io import ImageReadError
from ..drawing import class_color
from .classes import cat_to_label, class_names

TILE = 384                        # long side of each drawn image, pixels
HEADER = 22                       # caption strip above each image
GAP = 6                           # white space between tiles
FONT, FONT_SCALE, FONT_THICKNESS = cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1
PAD_GREY = 114
Rect = Tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels


def _overlap(a, b) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return float(max(w, 0) * max(h, 0))


def label_positions(boxes, sizes: Sequence[Tuple[int, int]], hw: Tuple[int, int]) -> List[Rect]:
    """A rectangle (x1, y1, x2, y2) inside the image for each box's label of ``(w, h)`` pixels.

    Tries above the box's top-left corner, inside it, below the bottom-left corner, inside that,
    then the same on the right edge; takes the first spot clear of the labels placed so far, or
    the least covered one when none is clear.
    """
    height, width = hw
    placed: List[Rect] = []
    corners = np.asarray(boxes, np.float64).reshape(-1, 4).round().astype(int)
    for (x1, y1, x2, y2), (tw, th) in zip(corners, sizes):
        spots = []
        for x in (x1, x2 - tw):
            spots += [(x, y1 - th), (x, y1), (x, y2), (x, y2 - th)]
        rects = []
        for x, y in spots:
            x = int(min(max(x, 0), max(width - tw, 0)))
            y = int(min(max(y, 0), max(height - th, 0)))
            rects.append((x, y, x + tw, y + th))
        covered = [sum(_overlap(r, p) for p in placed) for r in rects]
        placed.append(rects[int(np.argmin(covered))])   # argmin: the first clear spot, if any
    return placed


def draw_labelled_boxes(img: np.ndarray, boxes, labels, texts: Sequence[str]) -> np.ndarray:
    """Boxes in their class colour, then every label on top at a spot from :func:`label_positions`."""
    sizes = []
    for text in texts:
        (tw, th), base = cv2.getTextSize(text, FONT, FONT_SCALE, FONT_THICKNESS)
        sizes.append((tw + 4, th + base + 3))
    for box, label in zip(np.asarray(boxes).reshape(-1, 4), labels):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(img, (x1, y1), (x2, y2), class_color(int(label)), 2, cv2.LINE_AA)
    for (x1, y1, x2, y2), label, text in zip(label_positions(boxes, sizes, img.shape[:2]), labels, texts):
        cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), class_color(int(label)), -1)
        cv2.putText(img, text, (x1 + 2, y2 - 4), FONT, FONT_SCALE, (0, 0, 0), FONT_THICKNESS, cv2.LINE_AA)
    return img


def _tile(img_rgb: np.ndarray, boxes, labels, texts, caption: str) -> np.ndarray:
    """The image resized to long side TILE on a grey square, boxes drawn, caption above."""
    h, w = img_rgb.shape[:2]
    r = TILE / max(h, w)
    img = cv2.resize(cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR), (max(1, round(w * r)), max(1, round(h * r))),
                     interpolation=cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR)
    draw_labelled_boxes(img, np.asarray(boxes, np.float64).reshape(-1, 4) * r, labels, texts)
    out = np.full((TILE + HEADER, TILE, 3), PAD_GREY, np.uint8)
    out[:HEADER] = 255
    out[HEADER:HEADER + img.shape[0], :img.shape[1]] = img
    cv2.putText(out, caption, (4, HEADER - 7), FONT, FONT_SCALE, (0, 0, 0), FONT_THICKNESS, cv2.LINE_AA)
    return out


def _pair(evaluator, dataset, index: int, dets, conf: float) -> np.ndarray:
    """One image twice: ground truth | predictions at ``conf``."""
    names = class_names(evaluator)
    img, boxes, classes = dataset.load_image(index)
    labels = cat_to_label(evaluator.label_to_cat_id)
    kept = sorted((d for d in dets if d["score"] >= conf), key=lambda d: -d["score"])  # best labels first
    xyxy = np.array([d["bbox"] for d in kept], np.float64).reshape(-1, 4)
    xyxy[:, 2:] += xyxy[:, :2]
    det_cls = [labels[int(d["category_id"])] for d in kept]
    stem = Path(str(dataset.records.paths[index])).name
    left = _tile(img, boxes, classes, [names[int(c)] for c in classes],
                 f"{stem}: ground truth ({len(classes)})")
    right = _tile(img, xyxy, det_cls, [f"{names[c]} {d['score']:.2f}" for c, d in zip(det_cls, kept)],
                  f"predictions, conf >= {conf:.3f} ({len(kept)})")
    return np.concatenate([left, np.full((left.shape[0], GAP // 2, 3), 255, np.uint8), right], 1)


def _grid(pairs: List[np.ndarray], cols: int) -> np.ndarray:
    h, w = pairs[0].shape[:2]
    rows = -(-len(pairs) // cols)
    grid = np.full((rows * (h + GAP) - GAP, cols * (w + GAP) - GAP, 3), 255, np.uint8)
    for i, pair in enumerate(pairs):
        r, c = divmod(i, cols)
        grid[r * (h + GAP):r * (h + GAP) + h, c * (w + GAP):c * (w + GAP) + w] = pair
    return grid


def write_image_grids(evaluator, dataset, out_dir, conf: float, grids: int = 2, per_grid: int = 6,
                      cols: int = 2) -> List[Path]:
    """``val_batch{i}_labels_vs_pred.png``: up to ``grids`` grids of ``per_grid`` scored images
    (the dataset's first readable ones), ``cols`` image pairs per row."""
    scored = set(evaluator.scored_image_ids)
    dets = defaultdict(list)
    for d in evaluator.detections:
        dets[d["image_id"]].append(d)
    pairs = []
    for index, image_id in enumerate(dataset.records.image_ids):
        if len(pairs) == grids * per_grid:
            break
        if int(image_id) in scored:
            try:
                pairs.append(_pair(evaluator, dataset, index, dets.get(int(image_id), []), conf))
            except ImageReadError:
                continue
    paths = []
    for i in range(0, len(pairs), per_grid):
        path = Path(out_dir) / f"val_batch{i // per_grid}_labels_vs_pred.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), _grid(pairs[i:i + per_grid], min(cols, len(pairs[i:i + per_grid]))))
        paths.append(path)
    return paths
