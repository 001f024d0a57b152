"""Reading weights into models: the read side of checkpoints, at the models' level.

The models need it too (pretrained backbones, timm conversion), and ``detector.models`` must
not import the trainer's package, so its one home is here; ``detector.engine.checkpoint``
(which writes checkpoints atomically) re-exports it. A checkpoint file is read with
``torch.load(weights_only=True)``: plain tensors and python values, no pickled classes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import torch

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable or made for another model."""


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint safely (``weights_only=True``) with a clear error on bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, not a torch file, pickled classes
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    if not isinstance(ckpt, dict):
        ckpt = {"model": ckpt}
    return upgrade_checkpoint(ckpt)


# In checkpoint format 1 (before the one layers module), the neck and head read ``leaky_relu`` as
# darknet's slope 0.1 while backbones read PyTorch's 0.01; now the name means 0.01 everywhere
# and darknet's slope is spelt out. Old checkpoints are rewritten on load so they compute what
# they were trained to compute.
DARKNET_LEAKY = {"name": "leaky_relu", "negative_slope": 0.1}


def upgrade_checkpoint(ckpt: dict) -> dict:
    """Rewrite an older checkpoint's config in memory into the current meaning of its keys."""
    version = ckpt.get("format_version", 1)
    model_cfg = (ckpt.get("config") or {}).get("model") if isinstance(ckpt.get("config"), Mapping) else None
    if version < 2 and isinstance(model_cfg, dict):
        for section in ("neck", "head"):
            part = model_cfg.get(section)
            if isinstance(part, dict) and part.get("act", "leaky_relu") == "leaky_relu":
                part["act"] = dict(DARKNET_LEAKY)
        ckpt["format_version"] = 2
    return ckpt


#: the confidence that maximised the mean F1 on the val split at the training run's last
#: evaluation of these weights: a plain float in checkpoints and in an ONNX file's metadata
CONF_KEY = "conf_thres_f1"


def stored_conf(ckpt_or_meta: Mapping[str, Any]) -> Optional[float]:
    """The F1-optimal confidence stored with the weights, or None (older files have none)."""
    value = ckpt_or_meta.get(CONF_KEY)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0:
        return float(value)
    return None


def model_state(ckpt: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
    """The weights to use for inference: EMA when present, else the raw model."""
    for key in ("ema", "model", "state_dict"):
        if isinstance(ckpt.get(key), Mapping):
            return ckpt[key]
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt  # a bare state_dict
    raise CheckpointError("checkpoint holds no model weights (keys: %s)" % sorted(ckpt)[:10])


def strip_prefix(state: Mapping[str, torch.Tensor], prefixes=WRAPPER_PREFIXES) -> dict:
    """Drop wrapper key prefixes (``module.`` of DataParallel/DDP, ``_orig_mod.`` of
    ``torch.compile``), nested ones included, so the keys match the bare model."""
    out = {}
    for k, v in state.items():
        stripped = True
        while stripped:
            stripped = False
            for p in prefixes:
                if k.startswith(p):
                    k, stripped = k[len(p):], True
        out[k] = v
    return out


def describe_mismatch(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    """Say how ``state`` differs from the model state ``own`` ('' when it fits exactly)."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if mismatched:
        k = mismatched[0]
        parts.append(f"{len(mismatched)} shape mismatches (e.g. {k}: "
                     f"{tuple(state[k].shape)} vs model {tuple(own[k].shape)})")
    return "; ".join(parts)


def load_state_strict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str = "checkpoint"):
    """``load_state_dict(strict=True)`` with an error that says which model the weights fit.

    Shape mismatches and missing/unexpected keys mean the weights belong to another
    architecture; that gets one readable message instead of a wall of key names.
    """
    problem = describe_mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointError(f"{what} does not fit this model ({type(model).__name__}): "
                              f"{problem}. Was it saved from another architecture?")
    model.load_state_dict(state, strict=True)
    return model


__all__ = ["CheckpointError", "load_checkpoint", "model_state", "strip_prefix",
           "describe_mismatch", "load_state_strict"]
