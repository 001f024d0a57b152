"""The one entry point that turns a config into a model.

A config whose ``model`` section has a ``neck`` or ``head`` is a detector; otherwise it
describes a backbone / ImageNet classifier.
"""
from __future__ import annotations

from typing import Iterable

from ..config import ConfigError, PathOrDict, load_config


def build_model(cfg: PathOrDict, overrides: Iterable[str] = ()):
    """Build a backbone, classifier or detector from a YAML path or a dict."""
    cfg = load_config(cfg, overrides)
    model_cfg = cfg.get("model")
    if not isinstance(model_cfg, dict):
        raise ConfigError("config has no 'model' section (source: %s)" % cfg.get("_source", "dict"))
    if "neck" in model_cfg or "head" in model_cfg:
        from .detector import build_detector
        return build_detector(model_cfg)
    from .backbones import build_backbone
    return build_backbone(model_cfg)
