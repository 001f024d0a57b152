"""One loader for the user-facing tools: a checkpoint, a config or an exported ONNX file.

``tools/eval.py``, ``tools/demo.py`` and ``tools/benchmark.py`` accept any of the three as
``--weights``; this is where that choice is made, so they all read files the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

ONNX_SUFFIXES = (".onnx",)


@dataclass
class LoadedModel:
    """``model``: a fused, eval-mode PyTorch detector or an ``ONNXRuntimeDetector``."""
    model: Any
    names: List[str]
    backend: str                       # "pytorch" | "onnxruntime"
    config: Dict[str, Any] = field(default_factory=dict)  # full config (checkpoint / YAML)
    source: str = ""

    @property
    def img_size(self) -> Optional[tuple]:
        """(h, w) the model was exported for, or None when it takes any size."""
        return getattr(self.model, "img_size", None) if self.backend == "onnxruntime" else None


def load_model(weights, device: str = "cpu", fuse: bool = True, threads: Optional[int] = None) -> LoadedModel:
    """``.onnx`` -> ONNX Runtime; ``.pt``/``.pth`` checkpoint or ``.yaml`` config -> PyTorch.

    A config gives random weights (for timing and export checks, not for accuracy).
    """
    path = Path(weights)
    if path.suffix.lower() in ONNX_SUFFIXES:
        from .onnx_runtime import ONNXRuntimeDetector

        if device != "cpu":
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        model = ONNXRuntimeDetector(path, threads=threads, providers=providers)
        return LoadedModel(model, list(model.names), "onnxruntime", {}, str(path))
    if not path.exists():
        raise FileNotFoundError(f"weights not found: {weights}")
    from ..config import load_config
    from ..engine.checkpoint import load_checkpoint
    from ..inference import Predictor

    predictor = Predictor(str(path), device=device, fuse=fuse)
    if path.suffix.lower() in (".pt", ".pth"):
        config = dict(load_checkpoint(path).get("config") or {})
    else:
        config = load_config(str(path))
    return LoadedModel(predictor.model, list(predictor.names), "pytorch", config, str(path))
