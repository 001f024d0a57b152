"""The ways to run a detector network (PyTorch, an exported file), behind one interface.

:class:`TorchBackend` runs a PyTorch :class:`~detector.models.detector.Detector`;
:class:`ExportedBackend` an exported file in ONNX Runtime
(:class:`~detector.export.onnx_runtime.ONNXRuntimeDetector`, any of the three export forms) or
in OpenVINO (:class:`~detector.export.openvino_runtime.OpenVINODetector`).
Inference (:class:`~.predictor.Predictor`), evaluation and the demo run every batch through the
same four steps, so the engine is chosen once, where the model is opened:

1. ``batch_from_letterboxed(images)`` / ``batch_from_uint8(tensor)``: letterboxed images ->
   the network's input (a tensor on the device for PyTorch; a numpy array for ONNX Runtime,
   so that no torch op runs per frame: torch's idle-spinning OpenMP threads slowed ONNX
   Runtime's next run, docs/deploy.md);
2. ``infer(x)``: the network and whatever decoding its graph holds (timed as "the model");
3. ``boxes(out, conf, iou, max_det)``: confidence filter and NMS -> per image numpy
   ``{"boxes", "scores", "labels"}`` in network-input pixels;
4. ``forward(x)`` / ``forward_fn(x)``: the network alone on a prepared batch (warm-up, timing).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch import nn

from ..config import ConfigError, trained_img_size
from ..models.postprocess import postprocess, postprocess_numpy
from ..models.state_dict import stored_conf as read_stored_conf

Predictions = List[Dict[str, np.ndarray]]


def torch_forward_fn(module: nn.Module, x: torch.Tensor) -> Callable[[], Any]:
    """A zero-argument callable running ``module`` (any network, a peer's too) on ``x`` in
    inference mode and nothing else: what a timing loop calls."""
    def run():
        with torch.inference_mode():
            return module(x)
    return run


def session_forward_fn(session, x: np.ndarray) -> Callable[[], Any]:
    """A zero-argument callable running an ONNX Runtime ``session`` (any graph, a peer's too)
    on the input ``x`` with the feed built once: what a timing loop calls."""
    feed = {session.get_inputs()[0].name: x}
    return lambda: session.run(None, feed)


class Backend:
    """What inference, evaluation and the demo need of an engine (module docstring).

    ``name``: ``"pytorch"``, ``"onnxruntime"`` or ``"openvino"``; ``names``: class names; ``config``: the
    config the weights came with (for ONNX: the sections the export recorded);
    ``trained_size``: the size the weights were trained at; ``fixed_size``: (h, w) a file was
    exported for, or None; ``max_batch``: the largest batch it takes, or None; ``device``;
    ``stored_conf``: the F1-optimal confidence the checkpoint or file stores, or None.
    """
    name: str
    names: List[str]
    config: Dict[str, Any]
    trained_size: int
    fixed_size: Optional[Tuple[int, int]] = None
    max_batch: Optional[int] = None
    device: torch.device = torch.device("cpu")
    model: Any = None
    nms_in_graph: bool = False  # NMS runs in the graph, with the thresholds set at export
    stored_conf: Optional[float] = None  # the F1-optimal confidence stored with the weights

    def batch_from_letterboxed(self, images: Sequence[np.ndarray]):
        """Letterboxed BGR uint8 images (HxWx3, one size) -> the network's input batch."""
        raise NotImplementedError

    def batch_from_uint8(self, images: torch.Tensor):
        """A (B, 3, H, W) uint8 RGB tensor (what the data loader gives) -> the input batch."""
        raise NotImplementedError

    def forward_fn(self, x) -> Callable[[], Any]:
        """A zero-argument callable running the network alone on the prepared batch ``x``."""
        raise NotImplementedError

    def forward(self, x):
        """The network alone on a prepared batch (its raw outputs)."""
        return self.forward_fn(x)()

    def infer(self, x):
        """The network and the decoding its graph holds; what :meth:`boxes` takes."""
        raise NotImplementedError

    def boxes(self, out, conf_thres: Optional[float], iou_thres: float, max_det: int,
              multi_label: bool = False) -> Predictions:
        """Confidence filter and NMS on :meth:`infer`'s output: per image numpy ``boxes``
        (float32 xyxy, network-input pixels), ``scores`` (float32), ``labels`` (int64).

        A graph with NMS inside (``nms_in_graph``) keeps its export thresholds; a given
        ``conf_thres`` above them filters its boxes further (None: not at all)."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for the device (so that a timer stops after the work, not after its launch)."""


class TorchBackend(Backend):
    """A PyTorch detector on ``device`` (in eval mode; ``half`` runs a float16 copy on CUDA)."""

    name = "pytorch"

    def __init__(self, model: nn.Module, names: Optional[Sequence[str]] = None,
                 config: Optional[Dict[str, Any]] = None, device=None, half: bool = False,
                 stored_conf: Optional[float] = None):
        self.device = torch.device(device) if device is not None else _module_device(model)
        if half and self.device.type != "cuda":
            raise ValueError(f"half precision needs a CUDA device (got {self.device})")
        self.dtype = torch.float16 if half else torch.float32
        self.model = (copy.deepcopy(model).half() if half else model).to(self.device).eval()
        num_classes = getattr(model, "num_classes", 0)
        self.names = [str(n) for n in names] if names is not None else [str(i) for i in range(num_classes)]
        self.config = dict(config or {})
        self.trained_size = trained_img_size(self.config)
        self.stored_conf = stored_conf

    def batch_from_letterboxed(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        # uint8 crosses to the device, then it is scaled there
        rgb = np.stack([b[..., ::-1].transpose(2, 0, 1) for b in images])
        return self.batch_from_uint8(torch.from_numpy(rgb))

    def batch_from_uint8(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, non_blocking=True).to(self.dtype).div_(255.0)

    def forward_fn(self, x) -> Callable[[], Any]:
        return torch_forward_fn(self.model, x)

    def infer(self, x) -> torch.Tensor:
        with torch.inference_mode():
            decoded = self.model.decode(self.model(x))
        self.synchronize()
        return decoded

    def boxes(self, out, conf_thres, iou_thres, max_det, multi_label=False) -> Predictions:
        dets = postprocess(out.float(), conf_thres, iou_thres, max_det, multi_label=multi_label)
        return [{"boxes": d["boxes"].float().cpu().numpy(), "scores": d["scores"].float().cpu().numpy(),
                 "labels": d["labels"].cpu().numpy()} for d in dets]

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class ExportedBackend(Backend):
    """An exported file in ONNX Runtime or OpenVINO (host arrays in, host arrays out)."""

    def __init__(self, detector):
        """``detector``: an :class:`~detector.export.onnx_runtime.ExportedDetector` (the ONNX
        Runtime or the OpenVINO runner)."""
        from ..export.onnx_export import EXPORTED_SECTIONS

        self.model = detector
        self.names = list(detector.names)
        self.fixed_size = detector.img_size
        self.max_batch = detector.batch
        self.trained_size = int(detector.meta.get("trained_img_size") or trained_img_size({}))
        # the checkpoint's data and eval sections, as the export recorded them (eval's defaults)
        self.config = {k: detector.meta[k] for k in EXPORTED_SECTIONS if detector.meta.get(k)}
        self.stored_conf = read_stored_conf(detector.meta)

    @property
    def name(self) -> str:
        """The engine: ``"onnxruntime"`` or ``"openvino"``."""
        return self.model.engine

    @classmethod
    def open(cls, path, device="cpu", threads: Optional[int] = None,
             openvino_precision: Optional[str] = None) -> "ExportedBackend":
        """An OpenVINO export (its folder or ``.xml``) in OpenVINO on the CPU (``openvino_precision``:
        its inference precision hint, None = OpenVINO's default); an ``.onnx`` file in ONNX
        Runtime, the CUDA provider first when ``device`` is a GPU."""
        from ..export.onnx_runtime import ONNXRuntimeDetector
        from ..export.openvino_export import is_openvino_path

        if is_openvino_path(path):
            from ..export.openvino_runtime import OpenVINODetector

            if torch.device(device).type != "cpu":
                raise ConfigError(f"OpenVINO exports run on the CPU here (device '{device}' asked): leave --device out")
            return cls(OpenVINODetector(path, threads=threads, precision=openvino_precision))

        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda":
            providers.insert(0, "CUDAExecutionProvider")
        return cls(ONNXRuntimeDetector(path, threads=threads, providers=providers))

    @property
    def nms_in_graph(self) -> bool:
        """Decoding and NMS run in the graph, with the thresholds set at export (``model.meta``)."""
        return self.model.has_nms

    def batch_from_letterboxed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        # swaps channels, transposes and scales in one pass; no torch op runs
        return cv2.dnn.blobFromImages(list(images), 1.0 / 255.0, swapRB=True)

    def batch_from_uint8(self, images: torch.Tensor) -> np.ndarray:
        return images.numpy().astype(np.float32) / np.float32(255.0)

    def forward_fn(self, x) -> Callable[[], Any]:
        return lambda: self.model.run(x)

    def infer(self, x):
        if self.model.has_nms:  # final boxes, with the thresholds baked in at export
            return self.model.predict(x)
        return self.model.decoded(x)

    def boxes(self, out, conf_thres, iou_thres, max_det, multi_label=False) -> Predictions:
        if self.model.has_nms:  # a threshold above the baked-in one still filters (None: none)
            if conf_thres is None:
                return out
            return [{k: v[p["scores"] > conf_thres] for k, v in p.items()} for p in out]
        return postprocess_numpy(out, conf_thres, iou_thres, max_det, multi_label)


def _module_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@contextlib.contextmanager
def backend_for(model, device=None, half: bool = False) -> Iterator[Backend]:
    """``model`` as a :class:`Backend`: a backend as it is, an ``ONNXRuntimeDetector`` in
    :class:`ExportedBackend`, a PyTorch detector in :class:`TorchBackend` (put in eval mode and
    on ``device`` for the block, its training mode restored after)."""
    if isinstance(model, Backend):
        yield model
    elif isinstance(model, nn.Module):
        was_training = model.training
        try:
            yield TorchBackend(model, device=device, half=half)
        finally:
            model.train(was_training)
    else:
        if half:
            raise ValueError("half applies to PyTorch models; an ONNX file runs in the precision "
                             "it was exported in")
        yield ExportedBackend(model)
