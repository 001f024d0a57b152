"""Post-processing: confidence filter, class-aware NMS, top-k.

Input is :meth:`Detector.decode`'s output (B, N, 5+C); boxes stay in network-input pixels (map
them back to the original image with :func:`detector.data.letterbox.unletterbox_boxes`).

Two entry points, one rule and one NMS (torchvision's, class-aware): :func:`postprocess`
on torch tensors for the PyTorch detector, :func:`postprocess_numpy` on numpy arrays for ONNX
Runtime. The numpy one does the work over all N x C scores in numpy and hands only the few
candidates to NMS, so a frame run through ONNX Runtime has no large torch op: torch's OpenMP
threads keep spinning after each parallel op and slowed the next ORT run on the 2-core machine
by up to 1.7x (docs/deploy.md, "Frames end to end").
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
import torch
from torchvision.ops import batched_nms, nms


def postprocess(decoded: torch.Tensor, conf_thres: float = 0.25, iou_thres: float = 0.45,
                max_det: int = 300, multi_label: bool = False, max_candidates: int = 30000
                ) -> List[Dict[str, torch.Tensor]]:
    """Per image ``{"boxes": (n, 4) xyxy, "scores": (n,), "labels": (n,) long}``, best first.

    score = objectness * class probability. ``multi_label`` keeps every class above
    ``conf_thres`` for a box (better mAP at a low threshold), else only its best class.
    ``max_candidates`` caps the boxes sent to NMS (highest scores kept) so that an untrained
    model with thousands of low-confidence boxes cannot stall NMS.
    """
    if decoded.ndim != 3 or decoded.shape[-1] < 6:
        raise ValueError(f"decoded must be (B, N, 5+C), got {tuple(decoded.shape)}")
    results = []
    for pred in decoded:
        boxes, obj, cls = pred[:, :4], pred[:, 4:5], pred[:, 5:]
        scores_all = obj * cls  # (N, C)
        if multi_label:
            i, j = (scores_all > conf_thres).nonzero(as_tuple=True)
            boxes_k, scores, labels = boxes[i], scores_all[i, j], j
        else:
            scores, labels = scores_all.max(1)
            keep = scores > conf_thres
            boxes_k, scores, labels = boxes[keep], scores[keep], labels[keep]
        if scores.numel() > max_candidates:
            top = scores.topk(max_candidates).indices
            boxes_k, scores, labels = boxes_k[top], scores[top], labels[top]
        keep = batched_nms(boxes_k.float(), scores.float(), labels, iou_thres)[:max_det]
        results.append({"boxes": boxes_k[keep], "scores": scores[keep], "labels": labels[keep].long()})
    return results


def postprocess_numpy(decoded: np.ndarray, conf_thres: float = 0.25, iou_thres: float = 0.45,
                      max_det: int = 300, multi_label: bool = False, max_candidates: int = 30000
                      ) -> List[Dict[str, np.ndarray]]:
    """:func:`postprocess` on a numpy (B, N, 5+C) array: the same boxes, as numpy arrays.

    Boxes whose objectness is below ``conf_thres`` are dropped before any per-class work
    (score = obj * cls <= obj, so none of them could pass), which is what keeps this cheap.
    """
    decoded = np.asarray(decoded)
    if decoded.ndim != 3 or decoded.shape[-1] < 6:
        raise ValueError(f"decoded must be (B, N, 5+C), got {tuple(decoded.shape)}")
    results = []
    for pred in decoded:
        pred = pred[pred[:, 4] > conf_thres]
        boxes, scores_all = pred[:, :4], pred[:, 4:5] * pred[:, 5:]
        if multi_label:
            i, j = np.nonzero(scores_all > conf_thres)
            boxes, scores, labels = boxes[i], scores_all[i, j], j
        else:
            labels = scores_all.argmax(1)
            scores = np.take_along_axis(scores_all, labels[:, None], 1)[:, 0]
            keep = scores > conf_thres
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if len(scores) > max_candidates:
            top = np.argpartition(-scores, max_candidates)[:max_candidates]
            boxes, scores, labels = boxes[top], scores[top], labels[top]
        boxes = np.ascontiguousarray(boxes, np.float32)
        scores = np.ascontiguousarray(scores, np.float32)
        # batched_nms's own trick, done in numpy so that one torch op runs: shifting each class
        # by more than the largest coordinate keeps boxes of different classes apart
        step = float(boxes.max()) + 1 if len(boxes) else 0.0
        shifted = boxes + (labels[:, None] * step).astype(np.float32)
        keep = nms(torch.from_numpy(shifted), torch.from_numpy(scores), iou_thres)[:max_det].numpy()
        results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep].astype(np.int64)})
    return results
