"""Run a detector over a dataloader and score it with :class:`COCOEvaluator`.

One loop for both engines: a PyTorch ``Detector`` (forward -> decode -> postprocess) and an
exported ONNX model run by :class:`detector.export.onnx_runtime.ONNXRuntimeDetector` (decoded
boxes filtered by the same rule in numpy, raw outputs decoded like PyTorch's, or final boxes
when NMS is inside the graph). Time per image
is split into pre-process (uint8 -> float on the device), inference (network + decode) and NMS.
"""
from __future__ import annotations

import copy
import logging
import time
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn

from .coco_evaluator import COCOEvaluator

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def evaluate(model, dataloader, conf_thres: float = 0.001, iou_thres: float = 0.6,
             max_det: int = 300, device=None, half: bool = False, multi_label: bool = False,
             progress: bool = True, evaluator: Optional[COCOEvaluator] = None) -> Dict[str, Any]:
    """COCO metrics of ``model`` on ``dataloader``'s dataset.

    ``model``: a PyTorch detector (left in the mode and on the device it came with; ``device``
    None = where its weights are) or an ``ONNXRuntimeDetector``. ``half`` runs a half-precision
    copy and needs CUDA. The dataset gives ``coco_gt()``, ``label_to_cat_id`` and ``names``.

    Returns :meth:`COCOEvaluator.summarize`'s dict (``AP, AP50, AP75, APs, APm, APl``,
    ``per_class``, ``detections``, ``unreadable_images``: left out of the score) plus ``timing``: ms per image for ``pre``, ``infer``,
    ``nms`` and ``total``.
    """
    from ..models.postprocess import postprocess, postprocess_numpy

    dataset = dataloader.dataset
    if evaluator is None:
        evaluator = COCOEvaluator(dataset.coco_gt(), dataset.label_to_cat_id,
                                  getattr(dataset, "names", None))
    is_torch = isinstance(model, nn.Module)
    if is_torch:
        device = torch.device(device) if device is not None else _model_device(model)
        if half and device.type != "cuda":
            raise ValueError("half precision evaluation needs a CUDA device (got %s)" % device)
        was_training = model.training
        net = copy.deepcopy(model).half() if half else model
        net.to(device).eval()
        dtype = torch.float16 if half else torch.float32
    else:
        if half:
            raise ValueError("half applies to PyTorch models; export the ONNX model with --half instead")
        device = torch.device("cpu")
        net = model
        dtype = torch.float32

    times = {"pre": 0.0, "infer": 0.0, "nms": 0.0}
    n_images = 0
    batch_size = 0
    iterator = dataloader
    if progress:
        from tqdm import tqdm
        iterator = tqdm(dataloader, desc="eval", unit="batch", leave=False)
    try:
        with torch.inference_mode():
            for batch in iterator:
                images, metas = batch["images"], batch["meta"]
                batch_size = max(batch_size, len(metas))
                t0 = time.perf_counter()
                if is_torch:
                    x = images.to(device, non_blocking=True).to(dtype) / 255.0
                else:  # numpy: no torch op whose idle threads would slow ONNX Runtime's next run
                    x = images.numpy().astype(np.float32) / np.float32(255.0)
                _sync(device)
                t1 = time.perf_counter()
                times["pre"] += t1 - t0
                if n_images == 0:  # warm-up (allocations, kernel selection) is not timed
                    net(x) if is_torch else net.run(x)
                    _sync(device)
                    t1 = time.perf_counter()
                if is_torch:
                    decoded = net.decode(net(x))
                    _sync(device)
                    t2 = time.perf_counter()
                    preds = postprocess(decoded.float(), conf_thres, iou_thres, max_det, multi_label=multi_label)
                elif net.has_nms:
                    preds = net.predict(x)  # thresholds are baked into the graph
                    t2 = time.perf_counter()
                else:
                    decoded = net.decoded(x)
                    t2 = time.perf_counter()
                    preds = postprocess_numpy(decoded, conf_thres, iou_thres, max_det, multi_label=multi_label)
                _sync(device)
                t3 = time.perf_counter()
                times["infer"] += t2 - t1
                times["nms"] += t3 - t2
                n_images += len(metas)
                evaluator.update(preds, metas)
    finally:
        if is_torch and not half:
            net.train(was_training)
    metrics = evaluator.summarize()
    if metrics["unreadable_images"]:
        log.warning("%d unreadable image(s) excluded from scoring (%d scored): %s",
                    len(metrics["unreadable_images"]), metrics["num_images"],
                    ", ".join(metrics["unreadable_images"][:10]))
    per_image = {k: 1000.0 * v / max(n_images, 1) for k, v in times.items()}
    per_image["total"] = sum(per_image.values())
    metrics["timing"] = {**per_image, "images": n_images, "batch": batch_size}
    return metrics
