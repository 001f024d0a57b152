"""Run a detector over a dataloader and score it with :class:`COCOEvaluator`.

One loop for both engines: the model runs through its :mod:`detector.inference.backends`
backend (a PyTorch ``Detector`` or an exported ONNX model run by ONNX Runtime), whose steps are
timed per image as pre-process (uint8 -> float on the device), inference (network + the
decoding its graph holds) and NMS.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, Optional

import torch

from ..inference.backends import backend_for
from .coco_evaluator import COCOEvaluator

log = logging.getLogger(__name__)


def evaluate(model, dataloader, conf_thres: float = 0.001, iou_thres: float = 0.6,
             max_det: int = 300, device=None, half: bool = False, multi_label: bool = False,
             progress: bool = True, evaluator: Optional[COCOEvaluator] = None) -> Dict[str, Any]:
    """COCO metrics of ``model`` on ``dataloader``'s dataset.

    ``model``: a PyTorch detector (left in the mode it came with, and moved to ``device``; None
    = where its weights are), an ``ONNXRuntimeDetector`` or a
    :class:`~detector.inference.backends.Backend`. ``half`` runs a half-precision copy and
    needs CUDA. The dataset gives ``coco_gt()``, ``label_to_cat_id`` and ``names``.

    Returns :meth:`COCOEvaluator.summarize`'s dict (``AP, AP50, AP75, APs, APm, APl``,
    ``per_class``, ``detections``, ``unreadable_images``: left out of the score) plus
    ``timing``: ms per image for ``pre``, ``infer``, ``nms`` and ``total``.
    """
    dataset = dataloader.dataset
    if evaluator is None:
        evaluator = COCOEvaluator(dataset.coco_gt(), dataset.label_to_cat_id,
                                  getattr(dataset, "names", None))
    iterator = dataloader
    if progress:
        from tqdm import tqdm
        iterator = tqdm(dataloader, desc="eval", unit="batch", leave=False)
    with backend_for(model, device, half) as backend, torch.inference_mode():
        times, n_images, batch_size = _run(backend, iterator, evaluator, conf_thres, iou_thres,
                                           max_det, multi_label)
    metrics = evaluator.summarize()
    if metrics["unreadable_images"]:
        log.warning("%d unreadable image(s) excluded from scoring (%d scored): %s",
                    len(metrics["unreadable_images"]), metrics["num_images"],
                    ", ".join(metrics["unreadable_images"][:10]))
    per_image = {k: 1000.0 * v / max(n_images, 1) for k, v in times.items()}
    per_image["total"] = sum(per_image.values())
    metrics["timing"] = {**per_image, "images": n_images, "batch": batch_size}
    return metrics


def _run(backend, batches, evaluator, conf_thres, iou_thres, max_det, multi_label):
    """Every batch through ``backend`` into ``evaluator``; returns (seconds per step, images,
    largest batch). The first batch's network run is repeated untimed first (allocations,
    kernel selection)."""
    times = {"pre": 0.0, "infer": 0.0, "nms": 0.0}
    n_images = batch_size = 0
    conf = None if backend.nms_in_graph else conf_thres  # NMS inside: the export's thresholds score
    for batch in batches:
        metas = batch["meta"]
        batch_size = max(batch_size, len(metas))
        t0 = time.perf_counter()
        x = backend.batch_from_uint8(batch["images"])
        backend.synchronize()
        t1 = time.perf_counter()
        times["pre"] += t1 - t0
        if n_images == 0:  # warm-up
            backend.forward(x)
            backend.synchronize()
            t1 = time.perf_counter()
        out = backend.infer(x)
        t2 = time.perf_counter()
        preds = backend.boxes(out, conf, iou_thres, max_det, multi_label)
        t3 = time.perf_counter()
        times["infer"] += t2 - t1
        times["nms"] += t3 - t2
        n_images += len(metas)
        evaluator.update(preds, metas)
    return times, n_images, batch_size
