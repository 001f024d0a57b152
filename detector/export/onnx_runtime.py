"""Running exported detector files (evaluation, demo, benchmark), and ONNX Runtime's runner.

:class:`ExportedDetector` is what every engine's runner shares (metadata, input checks,
decoding, final boxes); :class:`ONNXRuntimeDetector` runs an ``.onnx`` file in ONNX Runtime,
:class:`~.openvino_runtime.OpenVINODetector` an OpenVINO export. Each runs any of the three export forms (:mod:`.onnx_export`):
``det.predict(x)`` gives final boxes, ``det.decoded(x)`` the decoded (B, N, 5+C) array. The
default (decoded) form needs no large torch op per frame: the confidence filter runs in numpy
and only its few candidates reach NMS (:func:`detector.models.postprocess.postprocess_numpy`),
so ONNX Runtime's threads are not slowed by torch's idle-spinning OpenMP threads. A
raw-output file (``--raw``) is decoded by the PyTorch head, rebuilt from the model config
stored in the file, so both engines decode identically; ``det(x)`` and ``det.decode(raw)``
mirror the PyTorch detector.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..common import PathNotFoundError
from .onnx_export import detections_to_predictions, read_metadata

_GLOBAL_POOL: Optional[int] = None


class ModelFileError(ValueError):
    """An ONNX file cspdet cannot run (not one of its exports): a user error, said in one line."""


def use_global_thread_pool(threads: int) -> bool:
    """Make every later session share one intra-op pool of ``threads`` threads.

    Sessions timed alternately in one process must share their threads: with a pool per
    session, the idle pool of the session that just ran keeps spinning on a core and the next
    model runs up to 3x slower (measured here, docs/paper.md). Must run before the first
    session is created; returns False when the process already has a different setting.
    """
    global _GLOBAL_POOL
    if _GLOBAL_POOL is not None:
        return _GLOBAL_POOL == threads
    from onnxruntime.capi import _pybind_state

    try:
        _pybind_state.set_global_thread_pool_sizes(int(threads), 1)
    except Exception:  # the ORT environment exists already (a session was made before)
        return False
    _GLOBAL_POOL = int(threads)
    return True


def global_thread_pool() -> Optional[int]:
    """The threads of the process-wide pool :func:`use_global_thread_pool` set, or None.

    ORT's own helpers that open sessions (the INT8 quantizer) cannot run beside such a pool."""
    return _GLOBAL_POOL


def session_options(threads: Optional[int] = None):
    """``SessionOptions`` with ``threads`` intra-op threads (None = ORT's default), or the shared
    pool after :func:`use_global_thread_pool` (ORT refuses per-session threads then)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if _GLOBAL_POOL is not None:
        opts.use_per_session_threads = False
    elif threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    return opts


def make_session(path, threads: Optional[int] = None, providers: Optional[Sequence[str]] = None):
    """An ``InferenceSession`` with ``threads`` intra-op threads (None = ORT's default).

    After :func:`use_global_thread_pool` the session uses the shared pool instead.
    """
    import onnxruntime as ort

    opts = session_options(threads)
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), sess_options=opts, providers=list(providers))


class ExportedDetector:
    """What every runner of an exported detector file shares, whatever the engine: the
    ``cspdet`` metadata (classes, strides, graph end, fixed size and batch), input checks,
    padding to a fixed batch, decoding of raw outputs and the final boxes. An engine
    (:class:`ONNXRuntimeDetector`, :class:`~.openvino_runtime.OpenVINODetector`) only opens the
    file and runs the graph (:meth:`_run_graph`)."""

    engine = ""

    def _read_meta(self, path: Path, meta: dict) -> None:
        self.path, self.meta = path, meta
        if not self.meta:
            raise ModelFileError(f"{path} was not exported by cspdet export (no 'cspdet' metadata); "
                                 "cannot tell its classes and box decoding")
        self.names: List[str] = list(self.meta["names"])
        self.num_classes = int(self.meta["num_classes"])
        self.strides = list(self.meta["strides"])
        self.has_nms = bool(self.meta.get("nms"))
        # files written before the decoded form existed have no "outputs" key: raw or nms
        self.outputs = self.meta.get("outputs") or ("nms" if self.has_nms else "raw")
        size = self.meta.get("img_size")
        self.img_size = tuple(size) if size else None  # (h, w) for a fixed-size export
        self.batch = self.meta.get("batch")
        self.input_dtype = np.float32
        self._decoder = None

    def _run_graph(self, x: np.ndarray) -> List[np.ndarray]:
        """The graph's outputs for a checked, padded input batch (the engine's part)."""
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.path.name}, outputs={self.outputs}, size={self.img_size})"

    def _check_input(self, x) -> np.ndarray:
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (B, 3, H, W) batch, got {x.shape}")
        if self.img_size and tuple(x.shape[2:]) != self.img_size:
            raise ValueError(f"{self.path.name} was exported for {self.img_size[0]}x{self.img_size[1]} "
                             f"input, got {x.shape[2]}x{x.shape[3]}; use that size or export with --dynamic")
        if self.batch and x.shape[0] > self.batch:
            raise ValueError(f"{self.path.name} was exported for batch {self.batch}, got {x.shape[0]}; "
                             "export with --dynamic (or --batch) for other batch sizes")
        return np.ascontiguousarray(x, dtype=self.input_dtype)

    def run(self, x) -> List[np.ndarray]:
        """The graph's outputs as numpy arrays (x: float (B, 3, H, W) RGB in [0, 1]).

        A batch smaller than a fixed-batch export's is padded and the padding's outputs dropped.
        """
        x = self._check_input(x)
        n = x.shape[0]
        if self.batch and n < self.batch:
            x = np.concatenate([x, np.zeros((self.batch - n, *x.shape[1:]), x.dtype)])
        outs = self._run_graph(x)
        if self.batch and n < self.batch:
            outs = [o[o[:, 0] < n] for o in outs] if self.has_nms else [o[:n] for o in outs]
        return outs

    def __call__(self, x) -> List[torch.Tensor]:
        """Raw level outputs as float tensors, like ``Detector.forward``."""
        if self.outputs != "raw":
            raise RuntimeError(f"{self.path.name} ends in {self.outputs} boxes, not raw level outputs; "
                               "call predict() (or decoded()) instead")
        return [torch.from_numpy(o).float() for o in self.run(x)]

    @property
    def decoder(self):
        """The PyTorch head that decodes the raw outputs (built once from the stored config)."""
        if self._decoder is None:
            from ..models.builder import build_model

            model_cfg = dict(self.meta["model"])
            model_cfg["num_classes"] = self.num_classes
            self._decoder = build_model({"model": model_cfg}).eval()
        return self._decoder

    def decode(self, raw: Sequence[torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return self.decoder.decode(list(raw))

    def decoded(self, x) -> np.ndarray:
        """Decoded boxes (B, N, 5+C) float32: xyxy input pixels, objectness, class probabilities."""
        if self.outputs == "decoded":
            return self.run(x)[0].astype(np.float32, copy=False)
        if self.outputs == "raw":
            return self.decode(self(x)).numpy()
        raise RuntimeError(f"{self.path.name} has NMS inside; call predict() for its final boxes")

    def predict(self, x, conf_thres: Optional[float] = None, iou_thres: float = 0.45, max_det: int = 300,
                multi_label: bool = False) -> List[Dict[str, np.ndarray]]:
        """Per image ``{"boxes", "scores", "labels"}`` (numpy) in input pixels.

        ``conf_thres`` None means 0.25. For a graph with NMS the thresholds baked in at export
        time apply (see ``meta``); a given ``conf_thres`` above them still filters its boxes.
        """
        if self.has_nms:
            (dets,) = self.run(x)
            preds = detections_to_predictions(dets, x.shape[0])
            if conf_thres is None:
                return preds
            return [{k: v[p["scores"] > conf_thres] for k, v in p.items()} for p in preds]
        from ..models.postprocess import postprocess_numpy

        conf = 0.25 if conf_thres is None else conf_thres
        return postprocess_numpy(self.decoded(x), conf, iou_thres, max_det, multi_label)


class ONNXRuntimeDetector(ExportedDetector):
    """An exported detector run by ONNX Runtime, with the PyTorch detector's interface."""

    engine = "onnxruntime"

    def __init__(self, path, threads: Optional[int] = None, providers: Optional[Sequence[str]] = None):
        path = Path(path)
        if not path.is_file():
            raise PathNotFoundError(f"ONNX model not found: {path}")
        self._read_meta(path, read_metadata(path))
        self.session = make_session(path, threads, providers)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.input_dtype = np.float16 if "float16" in inp.type else np.float32
        self.output_names = [o.name for o in self.session.get_outputs()]

    def _run_graph(self, x: np.ndarray) -> List[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: x})
