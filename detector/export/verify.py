"""An exported file against the PyTorch network it came from, on one random input.

Each check returns one line saying how far the engine (ONNX Runtime, or a given runner) is from PyTorch (the export tool prints
it); the network is compared as trained, not in its deployed form, so the line covers the
re-parameterisation too.
"""
from __future__ import annotations

import copy
from typing import Sequence, Tuple

import torch
from torch import nn

from .onnx_export import DetectorWithNMS
from .onnx_runtime import ExportedDetector, ONNXRuntimeDetector, make_session


def _random_input(batch: int, size: Tuple[int, int]) -> torch.Tensor:
    return torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(0))


def compare_classifier(model: nn.Module, path, size: Tuple[int, int]) -> str:
    """Max abs difference of the logits."""
    x = _random_input(1, size)
    with torch.inference_mode():
        ref = model.eval()(x)
    sess = make_session(path, providers=["CPUExecutionProvider"])
    out = sess.run(["logits"], {"images": x.numpy()})[0]
    return f"logits max abs difference {(ref - torch.from_numpy(out)).abs().max().item():.2e}"


def compare_detector(model: nn.Module, path, size: Tuple[int, int], batch: int = 1,
                     conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 100) -> str:
    """The file's outputs (decoded, raw or final boxes: read from its metadata) against the
    same outputs of ``model``; the thresholds are those an NMS graph was exported with.
    ``path``: an ONNX file, or a runner of an exported file in another engine."""
    ort_model = path if isinstance(path, ExportedDetector) else ONNXRuntimeDetector(path)
    if ort_model.input_dtype.__name__ == "float16":
        return "float16 export: not compared on this machine"
    x = _random_input(batch, size)
    net = copy.deepcopy(model).cpu().float().eval()
    with torch.inference_mode():
        if ort_model.has_nms:
            return _compare_boxes(DetectorWithNMS(net, conf_thres, iou_thres, max_det)(x), ort_model.run(x)[0])
        if ort_model.outputs == "decoded":
            diff = (net.decode(net(x)) - torch.from_numpy(ort_model.run(x)[0])).abs()
            return (f"decoded outputs max abs difference: boxes {diff[..., :4].max().item():.2e} px, "
                    f"probabilities {diff[..., 4:].max().item():.2e}")
        diff = max((r - torch.from_numpy(o)).abs().max().item() for r, o in zip(net(x), ort_model.run(x)))
        return f"raw outputs max abs difference {diff:.2e}"


def _compare_boxes(ref: torch.Tensor, out: Sequence) -> str:
    """(K, 7) detections of PyTorch and ONNX Runtime: how many boxes agree."""
    if ref.shape[0] != out.shape[0]:
        return f"PyTorch kept {ref.shape[0]} boxes, ONNX Runtime {out.shape[0]}"
    out = torch.from_numpy(out)
    # order among equal scores is free: match each box to its nearest of the same image/class
    same = (ref[:, None, 0] == out[None, :, 0]) & (ref[:, None, 6] == out[None, :, 6])
    dist = (ref[:, None, 1:6] - out[None, :, 1:6]).abs().amax(-1).masked_fill(~same, float("inf"))
    nearest = dist.min(1).values if ref.numel() else torch.zeros(0)
    matched = int((nearest < 1e-2).sum())
    note = "" if matched == len(nearest) else " (equal scores, as random weights give, may keep other boxes)"
    return f"{out.shape[0]} boxes, {matched} equal to PyTorch's within 1e-2{note}"
