"""OpenVINO's runner of our exports (:class:`OpenVINODetector`), for evaluation, predict, the
demo and the benchmark.

It takes an OpenVINO export (its folder or ``model.xml``, :mod:`.openvino_export`) or an
``.onnx`` file of ours, which OpenVINO reads directly. Compiled for the CPU with the latency
hint and ``threads`` inference threads. ``precision`` is OpenVINO's inference precision hint:
None keeps OpenVINO's default, which on CPUs with AMX or AVX-512 BF16 runs float graphs in
bfloat16 (faster, slightly different boxes); ``"f32"`` runs them in float32 as exported.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np

from ..common import PathNotFoundError
from .onnx_export import read_metadata
from .onnx_runtime import ExportedDetector
from .openvino_export import import_openvino, model_file, read_openvino_metadata

PRECISIONS = ("f32", "bf16", "f16")


def compile_openvino(model, threads: Optional[int] = None, precision: Optional[str] = None):
    """``model`` (an ``openvino.Model`` or a file path) compiled for the CPU, latency hint."""
    ov = import_openvino()
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if precision:
        if precision not in PRECISIONS:
            raise ValueError(f"OpenVINO precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
        config["INFERENCE_PRECISION_HINT"] = precision
    return ov.Core().compile_model(model if not isinstance(model, Path) else str(model), "CPU", config)


def openvino_forward_fn(compiled, x: np.ndarray):
    """A zero-argument callable running a compiled model on ``x`` (any graph, a peer's too)
    through one infer request: what a timing loop calls."""
    request = compiled.create_infer_request()
    return lambda: request.infer({0: x})


class OpenVINODetector(ExportedDetector):
    """An exported detector run by OpenVINO on the CPU, with the ONNX Runtime runner's interface."""

    engine = "openvino"

    def __init__(self, path, threads: Optional[int] = None, precision: Optional[str] = None):
        ov = import_openvino()
        path = Path(path)
        if not path.exists():
            raise PathNotFoundError(f"OpenVINO model not found: {path}")
        if path.suffix.lower() == ".onnx":
            model, meta = ov.Core().read_model(str(path)), read_metadata(path)
        else:
            path = model_file(path)
            model = ov.Core().read_model(str(path))
            meta = read_openvino_metadata(model)
        self._read_meta(path, meta)
        self.precision = precision
        self.compiled = compile_openvino(model, threads, precision)
        self.request = self.compiled.create_infer_request()
        self.num_outputs = len(self.compiled.outputs)

    def _run_graph(self, x: np.ndarray) -> List[np.ndarray]:
        self.request.infer({0: x})
        return [self.request.get_output_tensor(i).data.copy() for i in range(self.num_outputs)]
