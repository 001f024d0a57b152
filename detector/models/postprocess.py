"""Post-processing: confidence filter, class-aware NMS (``torchvision.ops.batched_nms``), top-k.

Input is :meth:`Detector.decode`'s output; boxes stay in network-input pixels (map them back
to the original image with :func:`detector.data.letterbox.unletterbox_boxes`).
"""
from __future__ import annotations

from typing import Dict, List

import torch
from torchvision.ops import batched_nms


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
