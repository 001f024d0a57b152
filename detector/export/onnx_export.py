"""ONNX export of a detector, in one of three forms (``outputs``):

- ``"decoded"`` (the default): the network plus its box decoding; the single output
  ``predictions`` (B, N, 5+C) holds xyxy boxes in network-input pixels, objectness and class
  probabilities -- what :meth:`Detector.decode` returns, so only the confidence filter and NMS
  remain (:func:`detector.models.postprocess.postprocess_numpy`, no torch op per frame). Peers'
  exports (Ultralytics) end the same way, so benchmark timings compare like with like.
- ``"raw"``: the network alone; outputs are the raw per-level maps ``out_s8, out_s16, ...``
  and boxes are decoded outside (:class:`detector.export.onnx_runtime.ONNXRuntimeDetector`
  rebuilds the decoder from the config stored in the file).
- ``"nms"``: decoding and ONNX's ``NonMaxSuppression`` are part of the graph and the single
  output ``detections`` (K, 7) holds ``[batch_index, x1, y1, x2, y2, score, label]`` per kept
  box, in network-input pixels -- the same boxes as ``postprocess`` gives (best class per box,
  class-aware NMS, top ``max_det`` per image).

The first two hold only convolutions, activations, concat, pooling, upsampling and
element-wise ops, which every runtime reads, OpenCV DNN included. The file carries its own
description in ``metadata_props["cspdet"]`` (JSON): class names, input size, strides, the
output form, the model config and, with NMS, the baked-in thresholds.
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms

from ..common import to_hw

METADATA_KEY = "cspdet"
# the checkpoint config sections an export records beside the network, so that eval / demo
# of the file need no data argument (see exporter.checkpoint_metadata)
EXPORTED_SECTIONS = ("data", "eval")
FORMAT_VERSION = 1


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (opset >= 10); the eager forward gives the same selection.

    boxes (B, N, 4) xyxy, scores (B, C, N) -> selected (K, 3) int64 ``[batch, class, box]``.
    Per batch and class: drop scores <= ``score_threshold``, suppress IoU > ``iou_threshold``,
    keep at most ``max_per_class`` -- torchvision's NMS rules, so both agree.
    """

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class, iou_threshold, score_threshold):
        out = []
        max_k, iou, thr = int(max_per_class), float(iou_threshold), float(score_threshold)
        num_classes = scores.shape[1]
        for b in range(boxes.shape[0]):
            s = scores[b].t()  # (N, C)
            box_i, cls_i = (s > thr).nonzero(as_tuple=True)
            keep = batched_nms(boxes[b][box_i].float(), s[box_i, cls_i].float(), cls_i, iou)
            box_i, cls_i = box_i[keep], cls_i[keep]
            for c in range(num_classes):  # the per-class cap of the ONNX op
                m = cls_i == c
                if int(m.sum()) > max_k:
                    drop = m.nonzero(as_tuple=True)[0][max_k:]
                    m2 = torch.ones_like(m)
                    m2[drop] = False
                    box_i, cls_i = box_i[m2], cls_i[m2]
            out.append(torch.stack((torch.full_like(box_i, b), cls_i, box_i), 1))
        return torch.cat(out) if out else torch.zeros((0, 3), dtype=torch.long)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_threshold, score_threshold):
        return g.op("NonMaxSuppression", boxes, scores, max_per_class, iou_threshold,
                    score_threshold, center_point_box_i=0)


class DetectorWithNMS(nn.Module):
    """Detector -> decode -> best class per box -> class-aware NMS -> top ``max_det`` per image."""

    def __init__(self, model: nn.Module, conf_thres: float = 0.25, iou_thres: float = 0.45,
                 max_det: int = 100):
        super().__init__()
        self.model = model
        self.conf_thres, self.iou_thres, self.max_det = float(conf_thres), float(iou_thres), int(max_det)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        decoded = self.model.decode(self.model(x)).float()  # (B, N, 5+C)
        boxes, obj, cls = decoded[..., :4], decoded[..., 4:5], decoded[..., 5:]
        best, label = (obj * cls).max(-1)  # (B, N): postprocess keeps each box's best class only
        classes = torch.arange(cls.shape[-1], device=x.device).view(1, -1, 1)
        class_scores = best.unsqueeze(1) * (label.unsqueeze(1) == classes).to(best.dtype)  # (B, C, N)
        selected = _NonMaxSuppression.apply(
            boxes, class_scores,
            torch.tensor([self.max_det], dtype=torch.long),
            torch.tensor([self.iou_thres], dtype=torch.float32),
            torch.tensor([self.conf_thres], dtype=torch.float32))
        b, c, i = selected[:, 0], selected[:, 1], selected[:, 2]
        scores = class_scores[b, c, i]
        # group by image, best first; then keep the first max_det of each image
        order = torch.argsort(b.to(scores.dtype) * 2.0 + (1.0 - scores))
        b, c, i, scores = b[order], c[order], i[order], scores[order]
        images = torch.arange(x.shape[0], device=x.device)
        counts = (b.unsqueeze(1) == images.unsqueeze(0)).sum(0)  # (B,)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(b.shape[0], device=x.device) - starts[b]
        keep = rank < self.max_det
        b, c, i, scores = b[keep], c[keep], i[keep], scores[keep]
        return torch.cat((b.unsqueeze(1).to(scores.dtype), boxes[b, i], scores.unsqueeze(1),
                          c.unsqueeze(1).to(scores.dtype)), 1)


class DecodedOutputs(nn.Module):
    """The detector and its box decoding as one graph: (B, 3, H, W) -> (B, N, 5+C)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.decode(self.model(x))


class RawOutputs(nn.Module):
    """The detector as a graph of its raw level outputs (a tuple, one named output each)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return tuple(self.model(x))


def detections_to_predictions(detections, batch_size: int) -> List[Dict[str, np.ndarray]]:
    """(K, 7) ``[b, x1, y1, x2, y2, score, label]`` -> per image ``{"boxes", "scores", "labels"}``
    (numpy arrays, as :func:`~detector.models.postprocess.postprocess_numpy` returns)."""
    det = np.asarray(detections, dtype=np.float32).reshape(-1, 7)
    out = []
    for b in range(batch_size):
        d = det[det[:, 0] == b]
        out.append({"boxes": d[:, 1:5], "scores": d[:, 5], "labels": d[:, 6].astype(np.int64)})
    return out


def _size_hw(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    h, w = to_hw(size if isinstance(size, int) else (size[0], size[-1]))
    if h % 32 or w % 32:
        raise ValueError(f"export size must be a multiple of 32, got {h}x{w}")
    return h, w


def _graph_end(net: nn.Module, outputs: str, dynamic: bool, conf_thres: float, iou_thres: float,
               max_det: int) -> Tuple[nn.Module, List[str], Optional[Dict[str, Dict[int, str]]]]:
    """The module to trace for an ``outputs`` form, its output names and its free axes."""
    if outputs == "nms":
        axes = {"detections": {0: "num_detections"}}
        wrapper, names = DetectorWithNMS(net, conf_thres, iou_thres, max_det), ["detections"]
    elif outputs == "raw":
        wrapper, names = RawOutputs(net), [f"out_s{s}" for s in net.strides]
        axes = {n: {0: "batch", 2: f"{n}_h", 3: f"{n}_w"} for n in names}
    else:
        wrapper, names = DecodedOutputs(net), ["predictions"]
        axes = {"predictions": {0: "batch", 1: "boxes"}}
    if dynamic:
        return wrapper, names, {"images": {0: "batch", 2: "height", 3: "width"}, **axes}
    return wrapper, names, axes if outputs == "nms" else None


def export_onnx(model: nn.Module, path, img_size: Union[int, Sequence[int]] = 320, batch: int = 1,
                dynamic: bool = False, nms: bool = False, half: bool = False, raw: bool = False,
                conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 100,
                names: Optional[Sequence[str]] = None, opset: int = 17, device="cpu",
                fuse: bool = True, extra_meta: Optional[Dict[str, Any]] = None) -> Path:
    """Export ``model`` (a :class:`~detector.models.detector.Detector`) to ``path`` and check it.

    The graph ends in decoded boxes; ``raw`` stops at the per-level head outputs and ``nms``
    adds NMS (module docstring). ``dynamic`` makes batch, height and width free (multiples of
    32); ``half`` exports float16
    weights and input (for GPU runtimes; it needs ``device="cuda"``). The model is copied, so the
    caller's model is left as it was. ``fuse`` exports the deployed network (BatchNorm folded and
    re-parameterised for ONNX Runtime's blocked layout, :mod:`detector.models.deploy`; same
    outputs). ``extra_meta`` adds keys to the stored metadata (e.g. ``trained_img_size``).
    Returns the path after ``onnx.checker`` accepted the file.
    """
    import onnx

    h, w = _size_hw(img_size)
    if nms and raw:
        raise ValueError("choose one of nms (final boxes) and raw (per-level outputs)")
    outputs = "nms" if nms else "raw" if raw else "decoded"
    device = torch.device(device)
    if half and device.type != "cuda":
        raise ValueError("a float16 (half) export needs a CUDA device (float16 convolutions are a "
                         "GPU feature; ONNX Runtime's CPU provider has no float16 kernels for them)")
    net = copy.deepcopy(model).to(device).eval()
    if fuse and hasattr(net, "fuse"):
        net.fuse()
    if half:
        net.half()
    num_levels = len(net.strides)
    wrapper, output_names, dynamic_axes = _graph_end(net, outputs, dynamic, conf_thres, iou_thres, max_det)
    dummy = torch.zeros(batch, 3, h, w, device=device, dtype=torch.float16 if half else torch.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks turned constant
        torch.onnx.export(wrapper, (dummy,), str(path), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=output_names,
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    proto = onnx.load(str(path))
    meta = {
        "format_version": FORMAT_VERSION,
        "names": list(names) if names is not None else [str(i) for i in range(net.num_classes)],
        "num_classes": int(net.num_classes),
        "img_size": None if dynamic else [h, w],
        "batch": None if dynamic else int(batch),
        "strides": [int(s) for s in net.strides],
        "num_levels": num_levels,
        "nms": bool(nms),
        "outputs": outputs,
        "half": bool(half),
        "model": getattr(net, "config", {}),
    }
    if nms:
        meta.update(conf_thres=float(conf_thres), iou_thres=float(iou_thres), max_det=int(max_det))
    meta.update(extra_meta or {})
    return write_metadata(proto, meta, path)


def export_classifier_onnx(model: nn.Module, path, img_size: Union[int, Sequence[int]] = 224,
                           batch: int = 1, dynamic: bool = False, opset: int = 17,
                           names: Optional[Sequence[str]] = None,
                           extra_meta: Optional[Dict[str, Any]] = None) -> Path:
    """A classifier (a backbone with its head; the deployed form is exported) -> ONNX with
    input ``images`` and output ``logits`` (B, classes); checked like :func:`export_onnx`."""
    import onnx

    from ..models.deploy import reparameterize

    h, w = to_hw(img_size if isinstance(img_size, int) else (img_size[0], img_size[-1]))
    net = reparameterize(copy.deepcopy(model).cpu().float().eval())
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(batch, 3, h, w),), str(path), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["logits"], dynamic_axes=axes,
                          do_constant_folding=True)
    meta = {"format_version": FORMAT_VERSION, "task": "classify", "names": list(names or []),
            "num_classes": int(model.num_classes), "img_size": None if dynamic else [h, w],
            "batch": None if dynamic else int(batch)}
    meta.update(extra_meta or {})
    return write_metadata(onnx.load(str(path)), meta, path)


def write_metadata(proto, meta: Dict[str, Any], path, check: bool = True) -> Path:
    """Store ``meta`` as the file's one cspdet metadata entry, check the model (unless
    ``check`` is False: a quantized graph the quantizer made), save it to ``path``.

    Every export (detector, classifier, INT8) goes through this, so the loaders read one format.
    """
    import onnx

    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    proto.producer_name = "cspdet"
    if check:
        onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return Path(path)


def read_metadata(path_or_proto) -> Dict[str, Any]:
    """The ``cspdet`` metadata of an exported file (empty dict for a foreign ONNX model)."""
    import onnx

    proto = path_or_proto if hasattr(path_or_proto, "metadata_props") else onnx.load(
        str(path_or_proto), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    return {}
