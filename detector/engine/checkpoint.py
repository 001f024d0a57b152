"""Checkpoints: written atomically, read with ``weights_only=True``.

A checkpoint is a plain dict of tensors and plain python values (no pickled classes), so
``torch.load(path, weights_only=True)`` reads it and a half-written file never replaces a
good one. Each holds the resolved config, so evaluation, demo and export need only the file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from ..config import to_dict
# the read side lives with the models (which must not import the engine); re-exported here
from ..models.state_dict import (CheckpointError, describe_mismatch, load_checkpoint,  # noqa: F401
                                 load_state_strict, model_state, strip_prefix)

FORMAT_VERSION = 2  # 2: activation names mean one thing everywhere (models.state_dict.upgrade_checkpoint)


def save_checkpoint(state: Mapping[str, Any], path) -> Path:
    """Write ``state`` to ``path`` through a temp file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = dict(state)
    state.setdefault("format_version", FORMAT_VERSION)
    if "config" in state:
        state["config"] = to_dict(state["config"])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_detector_weights(model: torch.nn.Module, path) -> torch.nn.Module:
    """Fine-tune start: the weights of a detector checkpoint; a head made for another number of
    classes (shape mismatch under ``head.``) keeps its fresh initialisation, with a warning."""
    import logging
    log = logging.getLogger("cspdet.train")
    state = strip_prefix(model_state(load_checkpoint(path)))
    own = model.state_dict()
    reinit = [k for k, v in state.items() if k in own and k.startswith("head.")
              and tuple(v.shape) != tuple(own[k].shape)]
    if reinit:
        log.warning("%s: %d head tensors have another shape (another number of classes?); "
                    "the head's output layers are re-initialised", path, len(reinit))
        for k in reinit:
            state[k] = own[k]
    load_state_strict(model, state, what=f"weights {path}")
    log.info("weights loaded from %s", path)
    return model
