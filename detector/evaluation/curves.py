"""Precision, recall and F1 against the confidence threshold, read off pycocotools' arrays.

``COCOeval.accumulate`` leaves, for every IoU threshold, recall point, category, area range and
``maxDets``, the interpolated precision (``eval['precision']``) and the score of the detection at
which that recall is reached (``eval['scores']``), both shaped (T, R, K, A, M). At IoU 0.5, area
``all`` and the largest ``maxDets`` they *are* the precision-recall curve and its confidence axis:
keeping the detections that score at least ``c`` reaches the largest recall point whose score is
``>= c``, at that point's precision. So every number here comes from those two arrays; AP is not
computed a second time. Recall is known at pycocotools' 101 recall points (steps of 0.01), and
precision is pycocotools' interpolated one (the best precision at this recall or above).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

IOU_50, AREA_ALL, MAX_DETS = 0, 0, -1           # indices into (T, R, K, A, M)
CONF_GRID = np.linspace(0.0, 1.0, 1001)          # confidences the curves are sampled at


def _nanmean(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean over ``axis`` ignoring NaN, NaN where every value is NaN (without numpy's warning)."""
    ok = ~np.isnan(a)
    n = ok.sum(axis)
    total = np.where(ok, a, 0.0).sum(axis)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _f1(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    p = np.nan_to_num(p, nan=0.0)
    return np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)


def rates_at_conf(point_precision: np.ndarray, point_scores: np.ndarray, recall_points: np.ndarray,
                  conf: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 of one class when keeping detections scoring ``>= conf``.

    ``point_precision`` / ``point_scores``: that class's (R,) slices of ``eval['precision']`` and
    ``eval['scores']``. Recall points never reached are stored as 0 with score 0 (a prefix is
    reached, scores fall along it). Precision is NaN where no detection is kept (undefined).
    """
    conf = np.atleast_1d(np.asarray(conf, np.float64))
    reached = int(np.count_nonzero(point_scores > 0))
    scores = point_scores[:reached]
    n = np.searchsorted(-scores, -conf, side="right")   # recall points whose score is >= conf
    j = np.maximum(n - 1, 0)
    recall = np.where(n > 0, recall_points[j], 0.0)
    precision = np.where(n > 0, point_precision[j], np.nan)
    return precision, recall, _f1(precision, recall)


def overall_row(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The ``all`` row: instances summed, precision / recall / F1 averaged over classes (the F1
    the threshold maximises); precision over the classes where it is defined."""
    p = [r["precision"] for r in rows if not np.isnan(r["precision"])]
    return {"name": "all", "instances": int(sum(r["instances"] for r in rows)),
            "precision": float(np.mean(p)) if p else float("nan"),
            "recall": float(np.mean([r["recall"] for r in rows])) if rows else 0.0,
            "f1": float(np.mean([r["f1"] for r in rows])) if rows else 0.0}


@dataclass
class ConfidenceCurves:
    """Per-class curves (one row per class with ground truth) and their means.

    ``classes``: the evaluator's ``per_class`` rows (``label``, ``category_id``, ``name``,
    ``instances``, ``AP``, ``AP50``) in the order of the arrays below.
    """
    classes: List[Dict[str, Any]]
    recall_points: np.ndarray        # (R,) pycocotools' recThrs
    pr_precision: np.ndarray         # (K, R) precision at each recall point: the PR curve at IoU 0.5
    point_scores: np.ndarray         # (K, R) score at which each recall point is reached
    conf: np.ndarray                 # (N,) confidence grid
    precision: np.ndarray            # (K, N), NaN where nothing is kept
    recall: np.ndarray               # (K, N)
    f1: np.ndarray                   # (K, N)

    def mean(self, name: str) -> np.ndarray:
        """Mean over classes of ``precision`` / ``recall`` / ``f1`` / ``pr_precision``."""
        values = getattr(self, name)
        if not len(values):
            return np.full(values.shape[1], np.nan)
        return _nanmean(values, 0) if name == "precision" else values.mean(0)

    def best_conf(self) -> Tuple[Optional[float], float]:
        """The confidence maximising the mean F1 over classes, and that F1.

        Where a run of grid confidences ties for the maximum, the middle of the first such run
        is taken, so that a small shift of the scores does not drop it off the edge. None (and
        F1 0) when nothing is ever detected correctly.
        """
        f1 = self.mean("f1")
        if not len(self.classes) or not np.nanmax(f1) > 0:
            return None, 0.0
        best = f1.max()
        start = int(np.argmax(f1))
        stop = start
        while stop + 1 < len(f1) and f1[stop + 1] == best:
            stop += 1
        return float(self.conf[(start + stop) // 2]), float(best)

    def rows_at(self, conf: float) -> List[Dict[str, Any]]:
        """The ``classes`` rows with ``precision``, ``recall`` and ``f1`` at ``conf`` added."""
        rows = []
        for k, row in enumerate(self.classes):
            p, r, f = rates_at_conf(self.pr_precision[k], self.point_scores[k], self.recall_points, conf)
            rows.append({**row, "precision": float(p[0]), "recall": float(r[0]), "f1": float(f[0])})
        return rows


def _class_slices(ev, key: str, rows, n_points: int) -> np.ndarray:
    """(K, R) slice of ``ev.eval[key]`` at IoU 0.5, area all, the largest maxDets, one row per class."""
    index = {int(c): k for k, c in enumerate(ev.params.catIds)}
    if not rows:
        return np.zeros((0, n_points))
    return np.stack([ev.eval[key][IOU_50, :, index[r["category_id"]], AREA_ALL, MAX_DETS] for r in rows])


def confidence_curves(evaluator, conf_grid: np.ndarray = CONF_GRID) -> ConfidenceCurves:
    """Curves of everything the evaluator scored (call its ``summarize()`` first).

    Classes without ground truth in the scored images (pycocotools' -1) have no row. Without any
    detection (no ``cocoeval``) every class has recall 0 and undefined precision.
    """
    if evaluator.metrics is None:
        raise ValueError("the evaluator has not been summarized: call summarize() first")
    ev = evaluator.cocoeval
    rows = list(evaluator.metrics.get("per_class") or [])
    if ev is None:
        recall_points = np.linspace(0.0, 1.0, 101)
        pr = np.zeros((len(rows), len(recall_points)))
        scores = np.zeros_like(pr)
    else:
        recall_points = np.asarray(ev.params.recThrs, np.float64)
        pr, scores = (_class_slices(ev, key, rows, len(recall_points)) for key in ("precision", "scores"))
        keep = [k for k in range(len(rows)) if pr[k, 0] > -1]   # -1: no ground truth pycocotools counts
        rows, pr, scores = [rows[k] for k in keep], pr[keep], scores[keep]
    conf_grid = np.asarray(conf_grid, np.float64)
    p_r_f1 = np.zeros((3, len(rows), len(conf_grid)))
    for k in range(len(rows)):
        p_r_f1[:, k] = rates_at_conf(pr[k], scores[k], recall_points, conf_grid)
    return ConfidenceCurves(rows, recall_points, pr, scores, conf_grid, *p_r_f1)
