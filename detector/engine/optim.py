"""Optimizer with weight-decay-free norm and bias parameters, and a per-iteration lr schedule.

Weight decay pulls a BatchNorm scale or a bias towards zero without regularising anything
useful, so (as in YOLOv5 / YOLOX / timm) they go in groups with ``weight_decay = 0``.

The schedule is a pure function of the optimizer-step index (:class:`WarmupScheduler`): its
state is that index alone, so a resumed run lands on exactly the same lr. Warm-up ramps the lr
linearly from 0 (biases from ``warmup_bias_lr``, SGD momentum from ``warmup_momentum``), then
cosine decays to ``lr * min_lr_ratio`` or the step schedule multiplies by ``gamma`` at each
milestone fraction of the run.
"""
from __future__ import annotations

import math
from typing import List

import torch
from torch import nn

from .base_config import BaseTrainConfig

GROUP_DECAY, GROUP_NO_DECAY, GROUP_BIAS = "decay", "no_decay", "bias"


def param_groups(model: nn.Module, weight_decay: float) -> List[dict]:
    """Three groups: conv/linear weights (decayed), norm weights (not), biases (not)."""
    decay, no_decay, bias = [], [], []
    seen = set()
    for module in model.modules():
        is_norm = isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if name == "bias":
                bias.append(p)
            elif is_norm or p.ndim <= 1:
                no_decay.append(p)
            else:
                decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": GROUP_DECAY},
        {"params": no_decay, "weight_decay": 0.0, "name": GROUP_NO_DECAY},
        {"params": bias, "weight_decay": 0.0, "name": GROUP_BIAS},
    ]


def build_optimizer(model: nn.Module, cfg: BaseTrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.momentum, 0.999))
    raise ValueError(f"unknown optimizer {cfg.optimizer}")


class LRSchedule:
    """lr factor (of ``cfg.lr``) after ``step`` optimizer steps of ``total_steps``, no warm-up."""

    def __init__(self, cfg: BaseTrainConfig, total_steps: int):
        self.kind = cfg.scheduler
        self.total = max(int(total_steps), 1)
        self.min_ratio = cfg.min_lr_ratio
        self.milestones = [int(round(m * self.total)) for m in cfg.milestones]
        self.gamma = cfg.gamma

    def __call__(self, step: int) -> float:
        if self.kind == "step":
            return self.gamma ** sum(step >= m for m in self.milestones)
        t = min(step / self.total, 1.0)
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * t))


class WarmupScheduler:
    """Sets lr (and SGD momentum during warm-up) of every group for optimizer step ``n``.

    ``state_dict`` is the step counter only; the schedule itself is rebuilt from the config.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: BaseTrainConfig, total_steps: int,
                 warmup_steps: int):
        self.optimizer = optimizer
        self.cfg = cfg
        self.schedule = LRSchedule(cfg, total_steps)
        self.warmup_steps = int(warmup_steps)
        self.last_step = 0
        self.apply(0)

    def lr_for(self, step: int, group: dict) -> float:
        base = self.cfg.lr * self.schedule(step)
        if step < self.warmup_steps:
            t = step / self.warmup_steps
            start = self.cfg.warmup_bias_lr if group.get("name") == GROUP_BIAS else 0.0
            return start + t * (base - start)
        return base

    def apply(self, step: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_for(step, group)
            if step < self.warmup_steps and "momentum" in group:
                t = step / self.warmup_steps
                group["momentum"] = self.cfg.warmup_momentum + t * (self.cfg.momentum - self.cfg.warmup_momentum)
            elif "momentum" in group:
                group["momentum"] = self.cfg.momentum

    def step(self) -> None:
        """Call after each optimizer step: moves to the lr of the next one."""
        self.last_step += 1
        self.apply(self.last_step)

    def state_dict(self) -> dict:
        return {"last_step": self.last_step, "warmup_steps": self.warmup_steps,
                "total_steps": self.schedule.total}

    def load_state_dict(self, state: dict) -> None:
        self.last_step = int(state["last_step"])
        self.apply(self.last_step)
