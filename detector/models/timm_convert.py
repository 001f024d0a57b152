"""timm checkpoints -> ours, and loading ImageNet weights into a backbone.

Our CSPResNet-50, CSPResNeXt-50, CSPDarknet-53 and Darknet-53 configs build timm's layouts
with timm's module names, so a timm state_dict maps key for key; the conversion still checks
every key and shape against the architecture so a checkpoint of another model fails with one
clear message instead of a wall of ``load_state_dict`` errors.
"""
from __future__ import annotations

from typing import Mapping

import torch

from .backbones import CONFIG_DIR, CSPBackbone, build_backbone
from .state_dict import (CheckpointError, describe_mismatch, load_checkpoint, load_state_strict,
                         model_state, strip_prefix)

TIMM_ARCHS = ("cspresnet50", "cspresnext50", "cspdarknet53", "darknet53")
HEAD_PREFIXES = ("head.", "conv_head.")


def from_timm_state_dict(state_dict: Mapping[str, torch.Tensor], arch: str) -> dict:
    """A timm ``state_dict`` of ``arch`` (one of :data:`TIMM_ARCHS`) -> one our model loads
    with ``strict=True`` (our ``configs/backbones/<arch>.yaml``, with the checkpoint's number of
    classes, or features-only when it has no ``head.fc``).

    Raises ``ValueError`` when the weights are not a timm ``arch`` (missing, extra or
    wrongly-shaped tensors).
    """
    if arch not in TIMM_ARCHS:
        raise ValueError(f"no timm conversion for arch '{arch}'; supported: {', '.join(TIMM_ARCHS)}")
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ValueError("expected a non-empty timm state_dict (mapping of name -> tensor)")
    if isinstance(state_dict.get("state_dict"), Mapping):  # a timm training checkpoint
        state_dict = state_dict["state_dict"]
    state = strip_prefix(state_dict)
    fc = state.get("head.fc.weight")
    num_classes = int(fc.shape[0]) if isinstance(fc, torch.Tensor) else 0
    with torch.device("meta"):
        reference = build_backbone(CONFIG_DIR / f"{arch}.yaml", num_classes=num_classes)
    own = reference.state_dict()
    problem = describe_mismatch(own, state)
    if problem:
        raise ValueError(f"state_dict is not a timm '{arch}': {problem}")
    return {k: state[k] for k in own}


def load_pretrained_backbone(backbone: CSPBackbone, path, strict_head: bool = False) -> CSPBackbone:
    """Load ImageNet weights into ``backbone`` (in place) and return it.

    ``path``: a classification checkpoint of ours (``{"model", "ema"?, "config": {"model":
    <backbone config>}, ...}``, EMA weights preferred), a detector checkpoint (its backbone is
    taken), a bare state_dict, or a timm state_dict of the same architecture. The classifier
    head (``head.*``, ``conv_head.*``) is dropped when the backbone has none (features-only, as
    in a detector) or when its size differs (another number of classes) unless
    ``strict_head``. Raises :class:`CheckpointError` when the weights belong to another
    architecture, naming the architecture the checkpoint says it holds.
    """
    ckpt = load_checkpoint(path)
    state = strip_prefix(model_state(ckpt))
    if state and all(k.startswith("backbone.") for k in state if not k.startswith("neck.")
                     and not k.startswith("head.")) and any(k.startswith("backbone.") for k in state):
        # a detector checkpoint: take its backbone
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    saved = _saved_arch(ckpt)
    if backbone.name in TIMM_ARCHS:  # same keys as ours; this checks them against the arch
        try:
            state = from_timm_state_dict(state, backbone.name)
        except ValueError as e:
            raise CheckpointError(f"{path}{saved}: {e}") from None
    own = backbone.state_dict()
    head_fits = all(k in own and tuple(own[k].shape) == tuple(v.shape)
                    for k, v in state.items() if k.startswith(HEAD_PREFIXES))
    if backbone.head is None or (not head_fits and not strict_head):
        state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
        own_head = {k: v for k, v in own.items() if k.startswith(HEAD_PREFIXES)}
        state.update(own_head)  # keep the backbone's own (fresh) head, if any
    load_state_strict(backbone, state,
                      what=f"pretrained weights {path}{saved} for backbone '{backbone.name}'")
    return backbone


def _saved_arch(ckpt) -> str:
    """`` (a '<name>' model)`` from a checkpoint's config, for error messages; '' if unknown."""
    cfg = ckpt.get("config") if isinstance(ckpt, dict) else None
    model = cfg.get("model") if isinstance(cfg, dict) else None
    if not isinstance(model, dict):
        return ""
    if isinstance(model.get("backbone"), dict):  # a detector's config
        model = model["backbone"]
    name = model.get("name") or model.get("arch")
    return f" (a '{name}' model)" if name else ""


__all__ = ["from_timm_state_dict", "load_pretrained_backbone", "TIMM_ARCHS"]
