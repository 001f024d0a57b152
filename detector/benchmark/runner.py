"""One forward of a model in one engine, as a zero-argument callable to time.

How a network runs in PyTorch, ONNX Runtime or OpenVINO is the inference backends' and the
export runners' (``torch_forward_fn`` / ``session_forward_fn`` / ``openvino_forward_fn``, which
take any network, a peer's too); this module only maps the benchmark's engine names onto them
(plus OpenCV DNN, which only the benchmark times).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

ENGINES = ("pytorch", "onnxruntime", "openvino", "opencv")
ORT_ENGINES = ("onnxruntime", "int8")  # an INT8 file runs in ONNX Runtime too
OPENVINO_ENGINES = ("openvino", "openvino-int8")  # fp32 ONNX read by OpenVINO; its NNCF INT8 IR
INT8_ENGINE = {"onnxruntime": "int8", "openvino": "openvino-int8"}  # each engine's INT8 column


def openvino_available() -> bool:
    """Whether OpenVINO and NNCF are installed (looked up, not imported: loading OpenVINO's
    runtime starts its thread pools, which a process that never times it need not carry)."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("openvino", "nncf"))


def available_engines() -> list:
    """The engines this machine can time (OpenVINO only with the openvino extra)."""
    return [e for e in ENGINES if e != "openvino" or openvino_available()]


def make_runner(engine: str, model, onnx_path: Optional[Path], size: int, batch: int,
                threads: int) -> Callable[[], object]:
    """A zero-argument callable running one forward of ``model`` (a
    :class:`~detector.benchmark.models.Model`; only PyTorch reads it) or of ``onnx_path`` (an
    OpenVINO IR for ``openvino-int8``) at (batch, 3, size, size), OpenVINO with its default
    precision, as users get it; the file engines run it once first, so that a graph an engine
    cannot run fails here (reported per model), not inside the timing loop."""
    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    if engine == "pytorch":
        import torch

        from ..inference.backends import torch_forward_fn

        return torch_forward_fn(model.module, torch.from_numpy(x))
    if engine in ORT_ENGINES:
        from ..export.onnx_runtime import make_session
        from ..inference.backends import session_forward_fn

        run = session_forward_fn(make_session(onnx_path, threads=threads, providers=["CPUExecutionProvider"]), x)
    elif engine in OPENVINO_ENGINES:
        from ..export.openvino_runtime import compile_openvino, openvino_forward_fn

        run = openvino_forward_fn(compile_openvino(Path(onnx_path), threads), x)
    elif engine == "opencv":
        run = _opencv_forward_fn(onnx_path, x)
    else:
        raise ValueError(f"unknown engine {engine}")
    run()
    return run


def _opencv_forward_fn(onnx_path: Path, x: np.ndarray) -> Callable[[], object]:
    import cv2

    net = cv2.dnn.readNetFromONNX(str(onnx_path))  # default backend and target: OpenCV's own, CPU
    names = list(net.getUnconnectedOutLayersNames())

    def run():
        net.setInput(x)
        return net.forward(names)
    return run
