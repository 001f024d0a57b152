"""Confusion matrix of the detections an evaluator holds, with a background row and column.

Per image, the detections kept at a confidence are matched to the ground truth without looking
at classes (greedily, highest IoU first, each box used once, IoU >= ``iou``); then the classes
of each matched pair are compared. Rows are the true class, columns the predicted one; the last
row and column are *background*: a ground-truth object nothing matched is counted in its row's
background column (missed), a detection that matched nothing in the background row (false
positive). Crowd and ``ignore`` ground truth are not objects to find: they are left out, and a
detection lying on one (pycocotools' crowd overlap >= ``iou``) counts nowhere, as in COCOeval.
IoUs are pycocotools' own (``pycocotools.mask.iou``).
"""
from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .classes import cat_to_label, class_names

BACKGROUND = "background"


@dataclass
class ConfusionMatrix:
    """``counts[true, predicted]`` over ``names`` (the classes, then ``background``)."""
    counts: np.ndarray
    names: List[str]
    conf: float
    iou: float

    def normalized(self) -> np.ndarray:
        """Each row divided by its sum (rows without any count stay 0): where a true class goes."""
        total = self.counts.sum(1, keepdims=True)
        return self.counts / np.maximum(total, 1)

    def write_csv(self, path) -> Path:
        """Counts with a header row and a first column of names (true \\ predicted)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow([f"true \\ predicted (conf {self.conf:g}, IoU {self.iou:g})"] + self.names)
            for name, row in zip(self.names, self.counts):
                w.writerow([name] + [int(v) for v in row])
        return path


def match_boxes(ious: np.ndarray, iou: float) -> List[Tuple[int, int]]:
    """(row, column) pairs of an IoU matrix, highest IoU first, each row and column used once."""
    rows, cols = np.nonzero(ious >= iou)
    order = np.argsort(-ious[rows, cols], kind="stable")
    used_r, used_c, pairs = set(), set(), []
    for i in order:
        r, c = int(rows[i]), int(cols[i])
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


def _iou(dets_xywh: Sequence, gts_xywh: Sequence, crowd: bool) -> np.ndarray:
    from pycocotools import mask as mask_utils
    if not len(dets_xywh) or not len(gts_xywh):
        return np.zeros((len(dets_xywh), len(gts_xywh)))
    return np.asarray(mask_utils.iou(list(dets_xywh), list(gts_xywh), [int(crowd)] * len(gts_xywh)))


def _count_image(counts: np.ndarray, anns, dets, labels: Dict[int, int], iou: float) -> None:
    """Add one image: ``anns`` its COCO ground truth, ``dets`` its kept COCO results."""
    bg = counts.shape[0] - 1
    objects = [a for a in anns if not (a.get("iscrowd") or a.get("ignore"))
               and int(a["category_id"]) in labels]
    regions = [a["bbox"] for a in anns if a.get("iscrowd") or a.get("ignore")]
    gt_cls = [labels[int(a["category_id"])] for a in objects]
    dt_cls = [labels[int(d["category_id"])] for d in dets]
    pairs = match_boxes(_iou([d["bbox"] for d in dets], [a["bbox"] for a in objects], False), iou)
    matched_d = {d for d, _ in pairs}
    matched_g = {g for _, g in pairs}
    for d, g in pairs:
        counts[gt_cls[g], dt_cls[d]] += 1
    for g in set(range(len(objects))) - matched_g:
        counts[gt_cls[g], bg] += 1
    unmatched = [d for d in range(len(dets)) if d not in matched_d]
    on_region = _iou([dets[d]["bbox"] for d in unmatched], regions, True).max(1, initial=0.0) >= iou
    for d, ignored in zip(unmatched, on_region):
        if not ignored:
            counts[bg, dt_cls[d]] += 1


def confusion_matrix(evaluator, conf: float, iou: float = 0.45) -> ConfusionMatrix:
    """The matrix of the images the evaluator scored, keeping detections scoring ``>= conf``.

    Needs the evaluator's ``summarize()`` to have run (it fixes which images were scored).
    """
    if evaluator.metrics is None:
        raise ValueError("the evaluator has not been summarized: call summarize() first")
    if not 0.0 < iou <= 1.0:
        raise ValueError(f"iou must be in (0, 1], got {iou}")
    labels = cat_to_label(evaluator.label_to_cat_id)
    nc = len(evaluator.label_to_cat_id)
    counts = np.zeros((nc + 1, nc + 1), np.int64)
    by_image = defaultdict(list)
    for d in evaluator.detections:
        if d["score"] >= conf:
            by_image[d["image_id"]].append(d)
    gt = evaluator.coco_gt
    for image_id in evaluator.scored_image_ids:
        _count_image(counts, gt.imgToAnns.get(image_id, []), by_image.get(image_id, []), labels, iou)
    return ConfusionMatrix(counts, class_names(evaluator) + [BACKGROUND], float(conf), float(iou))

