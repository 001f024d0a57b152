"""One loader for the user-facing tools: a checkpoint, a config or an exported ONNX file.

``cspdet eval``, ``cspdet predict`` and ``cspdet benchmark`` accept any of the three as
``--weights``; this is where that choice is made (by :class:`detector.inference.Predictor`),
so they all read files, and choose the input size, the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..common import PathNotFoundError
from ..inference import ONNX_SUFFIXES  # noqa: F401  (re-exported)


@dataclass
class LoadedModel:
    """``model``: a fused, eval-mode PyTorch detector or an ``ONNXRuntimeDetector``.

    ``input_size``: the size to run at (the checkpoint's trained size, the ONNX file's fixed
    size, or what the caller asked for).
    """
    model: Any
    names: List[str]
    backend: str                       # "pytorch" | "onnxruntime"
    config: Dict[str, Any] = field(default_factory=dict)  # full config (checkpoint / YAML)
    source: str = ""
    input_size: Union[int, tuple, None] = None
    predictor: Any = None              # the Predictor that loaded it (pre-processing, NMS)

    @property
    def img_size(self) -> Optional[tuple]:
        """(h, w) the model was exported for, or None when it takes any size."""
        return getattr(self.model, "img_size", None) if self.backend == "onnxruntime" else None


def load_model(weights, device: str = "cpu", fuse: bool = True, threads: Optional[int] = None,
               img_size=None) -> LoadedModel:
    """``.onnx`` -> ONNX Runtime; ``.pt``/``.pth`` checkpoint or ``.yaml`` config -> PyTorch.

    A config gives random weights (for timing and export checks, not for accuracy).
    ``img_size`` None = the model's own size (see :func:`detector.inference.resolve_img_size`).
    """
    from ..config import find_config
    from ..inference import Predictor

    path = Path(weights)
    if not path.exists() and path.suffix.lower() in (".yaml", ".yml"):
        path = find_config(path)  # a shipped config by name or repository path
    if not path.exists():
        raise PathNotFoundError(f"weights not found: {weights}")
    predictor = Predictor(str(path), img_size=img_size, device=device, fuse=fuse, threads=threads)
    return LoadedModel(predictor.model, list(predictor.names), predictor.backend, predictor.config,
                       str(path), predictor.img_size, predictor)
