"""Exponential moving average of model weights (YOLOv5 / timm ``ModelEmaV2`` style).

The EMA model is what gets evaluated and saved as ``best.pt``: it is smoother than the raw
weights and usually several AP points better early in training. Its decay ramps up with
``decay * (1 - exp(-updates / tau))`` so the first updates follow the fast-moving weights
instead of being stuck at the random initialisation. Buffers (BN running stats) are copied.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / DataParallel."""
    return model.module if hasattr(model, "module") else model


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay_max, self.tau = decay, tau
        self.updates = updates

    def decay(self) -> float:
        return self.decay_max * (1 - math.exp(-self.updates / self.tau)) if self.tau > 0 else self.decay_max

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay()
        own = self.module.state_dict()
        for k, v in unwrap(model).state_dict().items():
            e = own[k]
            if e.dtype.is_floating_point:
                e.mul_(d).add_(v.detach().to(e.dtype), alpha=1 - d)
            else:
                e.copy_(v)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state, updates: int) -> None:
        self.module.load_state_dict(state, strict=True)
        self.updates = int(updates)
