"""One forward of a model in one engine, as a zero-argument callable to time.

Kept to this one function: the PyTorch-or-ONNX choice is to move behind the predictor's
backend interface later, and this is the only place that will change.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

ENGINES = ("pytorch", "onnxruntime", "opencv")


def make_runner(engine: str, model, onnx_path: Optional[Path], size: int, batch: int,
                threads: int) -> Callable[[], object]:
    """A zero-argument callable running one forward of ``model`` at (batch, 3, size, size)."""
    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    if engine == "pytorch":
        import torch

        xt = torch.from_numpy(x)
        module = model.module

        def run():
            with torch.inference_mode():
                module(xt)
        return run
    if engine in ("onnxruntime", "int8"):
        from ..export.onnx_runtime import make_session

        session = make_session(onnx_path, threads=threads, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        session.run(None, feed)
        return lambda: session.run(None, feed)
    if engine == "opencv":
        import cv2

        net = cv2.dnn.readNetFromONNX(str(onnx_path))  # default backend and target: OpenCV's own, CPU
        names = list(net.getUnconnectedOutLayersNames())

        def run():
            net.setInput(x)
            net.forward(names)
        run()  # fail here (reported per model), not inside the timing loop
        return run
    raise ValueError(f"unknown engine {engine}")
