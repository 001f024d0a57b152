"""Weights into PyTorch models: a detector checkpoint, a detector config (random weights) or a
classifier checkpoint.

The one place the tools turn ``--weights`` into a network: :class:`~.predictor.Predictor`
(eval, predict), ``cspdet export`` and ``cspdet eval-cls`` read files, names and configs the
same way. Checkpoints are read by :mod:`detector.models.state_dict` (the engine writes them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from torch import nn

from ..common import PathNotFoundError
from ..config import ConfigError, find_config, load_config
from ..models.builder import build_model
from ..models.detector import build_detector
from ..models.state_dict import load_checkpoint, load_state_strict, model_state, stored_conf

Source = Union[str, os.PathLike, Mapping]

ONNX_SUFFIXES = (".onnx",)
CHECKPOINT_SUFFIXES = (".pt", ".pth")
CONFIG_SUFFIXES = (".yaml", ".yml")


@dataclass
class Weights:
    """A network in eval mode with its class names and the full config it came with;
    ``conf_thres_f1``: the F1-optimal confidence its checkpoint stores (None: none)."""
    model: nn.Module
    names: List[str]
    config: Dict[str, Any] = field(default_factory=dict)
    conf_thres_f1: Optional[float] = None


def resolve_weights(source: Source) -> Union[Path, Mapping]:
    """The file ``source`` names: a shipped config may be given by name or repository path;
    anything else must exist (:class:`PathNotFoundError`, a user error, otherwise). A mapping is returned as is."""
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    if not path.exists() and path.suffix.lower() in CONFIG_SUFFIXES:
        path = find_config(path)
    if not path.exists():
        raise PathNotFoundError(f"weights not found: {source}")
    return path


def data_names(cfg: Mapping) -> Optional[List[str]]:
    """Class names of the config's data section (a path or name resolved by find_config, or a
    mapping), or None when unavailable."""
    data = cfg.get("data")
    if data is None:
        return None
    try:
        from ..data import load_data_config

        return [str(n) for n in load_data_config(data).names]
    except Exception:  # missing file or malformed data section: the model's numbering will do
        return None


def load_detector(source: Source) -> Weights:
    """A detector from a checkpoint (``.pt``/``.pth``) or a config (random weights, classes
    from its data section as in training)."""
    source = resolve_weights(source)
    if not isinstance(source, Mapping) and source.suffix.lower() in CHECKPOINT_SUFFIXES:
        weights = _detector_checkpoint(source)
    else:
        weights = _detector_config(source)
    if len(weights.names) != weights.model.num_classes:
        raise ConfigError(f"{len(weights.names)} class names for a model of "
                          f"{weights.model.num_classes} classes")
    weights.model.eval()
    return weights


def _detector_checkpoint(path: Path) -> Weights:
    ckpt = load_checkpoint(path)
    cfg = ckpt.get("config") or {}
    if not isinstance(cfg.get("model"), Mapping):
        raise ConfigError(f"checkpoint {path} holds no model config "
                          "(ckpt['config']['model']); was it written by the trainer?")
    model = build_detector(cfg["model"])
    load_state_strict(model, model_state(ckpt), what=str(path))
    names = ckpt.get("names") or data_names(cfg)
    if not names or len(names) != model.num_classes:
        names = [str(i) for i in range(model.num_classes)]
    return Weights(model, [str(n) for n in names], dict(cfg), stored_conf(ckpt))


def _detector_config(source) -> Weights:
    cfg = load_config(source)
    model_cfg = dict(cfg["model"] if "model" in cfg else cfg)
    names = data_names(cfg)
    if names:
        model_cfg["num_classes"] = len(names)
    model = build_detector(model_cfg)
    return Weights(model, names or [str(i) for i in range(model.num_classes)], dict(cfg))


def classifier_model_config(ckpt: Mapping) -> Optional[dict]:
    """The model config of a classification checkpoint (a backbone: no neck, no head), or
    None when ``ckpt`` holds a detector (or no model config)."""
    cfg = ckpt.get("config") or {}
    model_cfg = cfg.get("model") if isinstance(cfg, Mapping) else None
    if not isinstance(model_cfg, Mapping) or "neck" in model_cfg or "head" in model_cfg:
        return None
    return dict(model_cfg)


def load_classifier(ckpt: Mapping, what: str) -> Weights:
    """The classifier of a checkpoint :func:`classifier_model_config` accepts (``what`` names
    it in errors). A features-only backbone (``num_classes`` 0) is a :class:`ConfigError`."""
    model_cfg = classifier_model_config(ckpt)
    if model_cfg is None:
        raise ConfigError(f"{what} is not a classifier checkpoint (from cspdet train-cls)")
    if not model_cfg.get("num_classes"):
        raise ConfigError(f"{what} holds a features-only backbone (num_classes 0): it has no "
                          "classifier to run or export")
    model = build_model({"model": model_cfg})
    load_state_strict(model, model_state(ckpt), what=what)
    names = [str(n) for n in (ckpt.get("names") or range(model.num_classes))]
    return Weights(model.eval(), names, dict(ckpt.get("config") or {}))


def read_classifier(path) -> Optional[Weights]:
    """The classifier in ``path`` when it is a classification checkpoint, else None (a
    detector checkpoint, a config or an ONNX file)."""
    if Path(path).suffix.lower() not in CHECKPOINT_SUFFIXES or not os.path.isfile(path):
        return None
    ckpt = load_checkpoint(path)
    if classifier_model_config(ckpt) is None:
        return None
    return load_classifier(ckpt, str(path))
