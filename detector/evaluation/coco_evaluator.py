"""COCO box metrics with pycocotools: the evaluator collects detections, pycocotools does the math.

Detections arrive in network-input pixels (what ``postprocess`` returns) together with each
image's letterbox ``meta``; they are mapped back to the original image with
:func:`detector.data.letterbox.unletterbox_boxes`, turned into COCO results (``xywh``, the
dataset's own category ids) and scored by ``pycocotools.cocoeval.COCOeval``. Nothing of the
AP computation is re-implemented here.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..data.letterbox import unletterbox_boxes

# Order of ``COCOeval.stats``.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


class COCOEvaluator:
    """Accumulate detections for a set of images and score them with pycocotools.

    ``coco_gt`` is a ``pycocotools.coco.COCO`` (from a JSON file, or built in memory from YOLO
    txt labels by the dataset); ``label_to_cat_id`` maps the model's contiguous class index to
    the dataset's category id (COCO's 80 ids run 1..90 with gaps). Only images passed to
    :meth:`update` are scored, so evaluating a subset of a dataset is honest: an image seen
    without any detection still counts its ground truth as missed.
    """

    def __init__(self, coco_gt, label_to_cat_id, names: Optional[Sequence[str]] = None):
        self.coco_gt = coco_gt
        self.label_to_cat_id = label_to_cat_id
        self.names = list(names) if names is not None else None
        self.reset()

    def reset(self) -> None:
        self.detections: List[Dict[str, Any]] = []
        self.image_ids: List[int] = []
        self.unreadable: Dict[int, str] = {}   # image id -> path: excluded from scoring
        self._seen = set()
        # kept by summarize() for the figures (curves.py, confusion.py, report.py)
        self.cocoeval = None          # the accumulated COCOeval; None without detections
        self.scored_image_ids: List[int] = []
        self.metrics: Optional[Dict[str, Any]] = None

    def _cat_id(self, label: int) -> int:
        try:
            return int(self.label_to_cat_id[label])
        except (IndexError, KeyError):
            raise ValueError(f"class index {label} has no category id (the model predicts more "
                             f"classes than the dataset has: {len(self.label_to_cat_id)})") from None

    def add_image(self, image_id) -> None:
        """Mark an image as evaluated (its ground truth counts even with no detections)."""
        if image_id not in self._seen:
            self._seen.add(image_id)
            self.image_ids.append(image_id)

    def update(self, predictions: Sequence[Mapping[str, Any]], metas: Sequence[Mapping[str, Any]],
               letterboxed: bool = True) -> None:
        """Add one batch: per image ``{"boxes", "scores", "labels"}`` and its ``meta``.

        ``boxes`` are xyxy in network-input pixels (``letterboxed=True``, mapped back with the
        meta's ``ratio``/``pad``/``orig_shape``) or already in original-image pixels.
        """
        if len(predictions) != len(metas):
            raise ValueError(f"{len(predictions)} predictions for {len(metas)} images")
        for pred, meta in zip(predictions, metas):
            image_id = meta["image_id"]
            if meta.get("unreadable"):
                # a file that cannot be decoded is not scored (its placeholder's detections
                # would count as false positives and its boxes as missed); it is counted instead
                self.unreadable.setdefault(image_id, str(meta.get("path", image_id)))
                continue
            if image_id in self._seen:
                # a data loader replaces an unreadable image by another one: score each image once
                continue
            self.add_image(image_id)
            boxes = _numpy(pred["boxes"]).reshape(-1, 4).astype(np.float64)
            if boxes.shape[0] == 0:
                continue
            if letterboxed:
                boxes = unletterbox_boxes(boxes, meta["ratio"], meta["pad"], meta["orig_shape"])
            scores = _numpy(pred["scores"]).reshape(-1)
            labels = _numpy(pred["labels"]).reshape(-1).astype(np.int64)
            xywh = boxes.copy()
            xywh[:, 2:] -= xywh[:, :2]
            for box, score, label in zip(xywh, scores, labels):
                self.detections.append({
                    "image_id": image_id,
                    "category_id": self._cat_id(int(label)),
                    "bbox": [round(float(v), 3) for v in box],
                    "score": round(float(score), 5),
                })

    def summarize(self) -> Dict[str, Any]:
        """COCO metrics of everything added so far.

        Returns ``AP, AP50, AP75, APs, APm, APl`` (and ``AR1 .. ARl``) as fractions in [0, 1]
        -- pycocotools' -1 ("no ground truth in this size range") is kept as -1 --, ``per_class``
        (one row per category with ground truth in the evaluated images), ``detections`` (the
        COCO results list, ready for ``json.dump``), ``num_images`` (images scored),
        ``unreadable_images`` (paths of the images left out because they cannot be decoded)
        and pycocotools' printed ``summary``.
        """
        from pycocotools.cocoeval import COCOeval

        img_ids = list(self.image_ids)
        if not img_ids and not self.unreadable:  # nothing added: the whole ground truth
            img_ids = sorted(self.coco_gt.getImgIds())
        result: Dict[str, Any] = {"num_images": len(img_ids), "detections": list(self.detections),
                                  "unreadable_images": sorted(self.unreadable.values())}
        self.cocoeval, self.scored_image_ids, self.metrics = None, img_ids, result
        gt_ann_ids = self.coco_gt.getAnnIds(imgIds=img_ids, iscrowd=False) if img_ids else []
        if not img_ids:
            result.update({k: -1.0 for k in STAT_NAMES})
            result.update(per_class=[], summary="no readable image to score")
            return result
        if not self.detections:
            # pycocotools cannot load an empty result list; nothing detected means AP 0
            # (or -1 where there is nothing to detect either, as pycocotools would say).
            value = 0.0 if gt_ann_ids else -1.0
            result.update({k: value for k in STAT_NAMES})
            result["per_class"] = self._per_class_rows(None, img_ids)
            result["summary"] = "no detections"
            return result
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            coco_dt = self.coco_gt.loadRes(copy.deepcopy(self.detections))
            ev = COCOeval(self.coco_gt, coco_dt, "bbox")
            ev.params.imgIds = img_ids
            ev.evaluate()
            ev.accumulate()
        self.cocoeval = ev
        summary = io.StringIO()
        with contextlib.redirect_stdout(summary):
            ev.summarize()
        result.update({k: float(v) for k, v in zip(STAT_NAMES, ev.stats)})
        result["per_class"] = self._per_class_rows(ev, img_ids)
        result["summary"] = summary.getvalue()
        return result

    def _per_class_rows(self, ev, img_ids) -> List[Dict[str, Any]]:
        """AP and AP50 per category (area ``all``, 100 detections), from ``ev.eval['precision']``."""
        cat_to_label = {}
        for label in range(len(self.label_to_cat_id)):
            cat_to_label.setdefault(self._cat_id(label), label)
        rows = []
        cat_ids = ev.params.catIds if ev is not None else sorted(self.coco_gt.getCatIds())
        for k, cat_id in enumerate(cat_ids):
            n_gt = len(self.coco_gt.getAnnIds(imgIds=img_ids, catIds=[cat_id], iscrowd=False))
            if n_gt == 0:
                continue
            if ev is not None:
                precision = ev.eval["precision"]  # (T, R, K, A, M)
                p_all = precision[:, :, k, 0, -1]
                p_50 = precision[0, :, k, 0, -1]
                ap = float(p_all[p_all > -1].mean()) if (p_all > -1).any() else 0.0
                ap50 = float(p_50[p_50 > -1].mean()) if (p_50 > -1).any() else 0.0
            else:
                ap = ap50 = 0.0
            label = cat_to_label.get(cat_id)
            cats = self.coco_gt.loadCats([cat_id])
            name = (self.names[label] if self.names is not None and label is not None
                    and label < len(self.names) else (cats[0].get("name") if cats else str(cat_id)))
            rows.append({"label": label, "category_id": int(cat_id), "name": name,
                         "instances": n_gt, "AP": ap, "AP50": ap50})
        return rows


def save_detections(detections: List[Dict[str, Any]], path) -> Path:
    """Write a COCO results JSON (the format pycocotools' ``loadRes`` and the COCO server read)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(detections, f)
    return path


def fmt_percent(v: float) -> str:
    """A fraction as a 5-wide percentage; "-" for pycocotools' -1 (nothing to score) or NaN."""
    return "    -" if v is None or v < 0 or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:5.1f}"


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """The summary line and the per-class table as plain text (percentages)."""
    head = " ".join(f"{k:>5}" for k in STAT_NAMES[:6])
    vals = " ".join(fmt_percent(metrics.get(k, -1)) for k in STAT_NAMES[:6])
    lines = [head, vals]
    unreadable = metrics.get("unreadable_images") or []
    if unreadable:
        lines += [f"{len(unreadable)} unreadable image(s) excluded from scoring ({metrics.get('num_images', 0)} "
                  f"scored): " + ", ".join(unreadable[:5]) + (" ..." if len(unreadable) > 5 else "")]
    rows = metrics.get("per_class") or []
    if rows:
        width = max(8, max(len(str(r["name"])) for r in rows))
        lines += ["", f"{'class':<{width}} {'cat_id':>6} {'inst':>5} {'AP':>5} {'AP50':>5}"]
        for r in rows:
            lines.append(f"{str(r['name']):<{width}} {r['category_id']:>6} {r['instances']:>5} "
                         f"{fmt_percent(r['AP'])} {fmt_percent(r['AP50'])}")
    timing = metrics.get("timing")
    if timing:
        lines += ["", "time per image (ms): pre-process {pre:.2f}, inference {infer:.2f}, "
                      "NMS {nms:.2f}, total {total:.2f} ({images} images, batch {batch})".format(**timing)]
    return "\n".join(lines)
