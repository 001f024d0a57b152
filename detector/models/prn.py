"""PRN neck: the partial-residual head of the CSPNet paper's fastest detectors.

Partial Residual Networks (Wang et al., ICCVW 2019) add a shortcut even where the two maps
differ in width: only the channels they have in common are summed (darknet's ``[shortcut]``
between layers of different widths), the rest pass through. That lets a light head reuse
wide backbone features at the cost of an addition instead of a concatenation and a conv.

Layout, coarsest level first (the published tiny PRN detector has two levels; ``strides`` may
name any number of them -- the paper's "PRN (3l)" uses three):

* coarsest level ``S``: ``x = conv1x1(F_S)``, ``y = conv3x3(x)``, out = ``act(x + y)``;
* each finer level ``s``: ``u = up(conv1x1(y_prev))`` from the previous level's 3x3 output,
  ``p = act(u (+) F_s)``, ``z = conv3x3(p)``, out = ``act(act(z + u) (+) F_s)``, and ``z`` feeds
  the next finer level.

``(+)`` is the partial residual with the backbone feature of the same stride; ``act`` after
every sum is darknet's (leaky by default). The outputs go straight to the head's 1x1 prediction
convs (``model.head.width: 0``), as in the reference cfg.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Sequence, Tuple, Union

import torch
from torch import nn

from ..config import ConfigError
from .layers import ConvNormAct, make_act

IntOrList = Union[int, Tuple[int, ...]]


def _darknet_leaky() -> dict:
    return {"name": "leaky_relu", "negative_slope": 0.1}


@dataclass
class PRNConfig:
    """PRN neck options (``model.neck`` with ``type: prn``).

    channels: width of each output level, finest first (int or one per level); a level's map
        is summed with the first ``channels`` channels of the backbone feature of its stride.
    act: activation of the convs and of every residual sum (darknet's leaky, slope 0.1).
    """
    type: str = "prn"
    channels: IntOrList = (64, 128, 256)
    act: Any = field(default_factory=_darknet_leaky)


def partial_add(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``x`` plus ``r`` over their common channels; ``x``'s width is kept (darknet's shortcut)."""
    cx, cr = x.shape[1], r.shape[1]
    if cx == cr:
        return x + r
    if cx < cr:
        return x + r[:, :cx]
    return torch.cat((x[:, :cr] + r, x[:, cr:]), 1)


class PRNLevel(nn.Module):
    """One finer level: lateral 1x1 + up-sampling, partial residual, 3x3, two shortcuts."""

    def __init__(self, in_ch: int, width: int, factor: int, act):
        super().__init__()
        self.reduce = ConvNormAct(in_ch, width, 1, act=act)
        self.up = nn.Upsample(scale_factor=factor, mode="nearest")
        self.conv = ConvNormAct(width, width, 3, act=act)
        self.act1, self.act2, self.act3 = make_act(act), make_act(act), make_act(act)

    def forward(self, prev: torch.Tensor, feat: torch.Tensor):
        u = self.up(self.reduce(prev))
        z = self.conv(self.act1(partial_add(u, feat)))
        out = self.act3(partial_add(self.act2(z + u), feat))
        return out, z


class PRN(nn.Module):
    """Partial-residual top-down neck over the backbone features at the head's strides."""

    def __init__(self, cfg: PRNConfig, feature_channels: Sequence[int],
                 feature_strides: Sequence[int], strides: Sequence[int]):
        super().__init__()
        n = len(strides)
        if isinstance(cfg.channels, int):
            widths = [cfg.channels] * n
        else:
            widths = [int(c) for c in cfg.channels]
            if len(widths) != n:
                raise ConfigError(f"model.neck.channels must be an int or a list of {n} values "
                                  f"(one per output level), got {list(cfg.channels)}")
        if list(strides) != sorted(strides) or len(set(strides)) != n:
            raise ConfigError(f"model.head.strides must increase for the prn neck, got {list(strides)}")
        fs = list(feature_strides)
        for s in strides:
            if s not in fs:
                raise ConfigError(f"PRN level of stride {s} needs a backbone feature of stride {s}; "
                                  f"the backbone gives strides {fs}")
        self.idx = [fs.index(s) for s in strides]
        cin = [feature_channels[i] for i in self.idx]
        act = cfg.act
        self.top_reduce = ConvNormAct(cin[-1], widths[-1], 1, act=act)
        self.top_conv = ConvNormAct(widths[-1], widths[-1], 3, act=act)
        self.top_act = make_act(act)
        self.levels = nn.ModuleList(
            PRNLevel(widths[i + 1], widths[i], strides[i + 1] // strides[i], act)
            for i in range(n - 2, -1, -1))  # coarse to fine
        self.strides = list(strides)
        self.out_channels = widths

    def forward(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        xs = [feats[i] for i in self.idx]
        x = self.top_reduce(xs[-1])
        y = self.top_conv(x)
        outs = [self.top_act(x + y)]
        prev = y
        for level, i in zip(self.levels, range(len(xs) - 2, -1, -1)):
            out, prev = level(prev, xs[i])
            outs.append(out)
        return outs[::-1]  # finest first, like the strides
