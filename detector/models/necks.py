"""Necks: turn backbone features (by increasing stride) into one fused map per output level.

* :class:`EFM` -- the CSPNet paper's Exact Fusion Model: output level ``s`` fuses the backbone
  features of scales ``s-1`` (down-sampled), ``s`` and ``s+1`` (up-sampled); each fused input is
  compressed by :class:`Maxout` and the fused map is refined by :class:`SAM` (or SPP, or nothing).
* :class:`GFM` -- global fusion (ThunderNet's CEM): every level sums projections of *all*
  backbone scales plus a global-context vector; cheaper than EFM's concatenation.
* :class:`PANet` -- YOLOv4's SPP + top-down FPN + bottom-up path aggregation, used with the large
  CSPDarknet53 / CSPResNeXt50 backbones.

Each neck is built from its own config dataclass (``type`` picks it) through
:func:`build_neck`; all return ``list[Tensor]`` ordered like the requested strides and expose
``out_channels``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Sequence, Tuple, Union

import torch
from torch import nn

from ..config import ConfigError, from_dict
from .deploy import as_conv_act
from .layers import SAM, SPP, ConvNormAct, LayerSpec, Maxout, MaxoutConv, SqueezeSPP, get_act

IntOrList = Union[int, Tuple[int, ...]]


def darknet_leaky() -> dict:
    """Darknet's ``leaky`` activation (LeakyReLU, slope 0.1): the necks' default, written out."""
    return {"name": "leaky_relu", "negative_slope": 0.1}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _per_level(value: IntOrList, n: int, name: str) -> List[int]:
    if isinstance(value, int):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ConfigError(f"model.neck.{name} must be an int or a list of {n} values "
                          f"(one per output level), got {value}")
    return [int(v) for v in value]


def _feature_index(feature_strides: Sequence[int], stride: int, what: str) -> int:
    if stride not in feature_strides:
        raise ConfigError(f"{what} needs a backbone feature of stride {stride}; the backbone "
                          f"gives strides {list(feature_strides)}")
    return list(feature_strides).index(stride)


class Resample(nn.Module):
    """Bring a map from stride ``src`` to stride ``dst`` and project it to ``out_ch`` channels.

    Down: ``down`` = "maxpool" (k x k max-pool then 1x1 conv; measured 0.7 GFLOPs cheaper than a
    3x3 stride-2 conv in the flagship) or "conv" (3x3 stride-2 convs). Up: 1x1 conv at the
    coarse resolution, then nearest up-sampling (the conv runs on 4x fewer pixels).
    ``maxout`` doubles the projection width and halves it back with :class:`Maxout`.
    """

    def __init__(self, in_ch: int, out_ch: int, src: int, dst: int, act: LayerSpec,
                 down: str = "maxpool", maxout: bool = False):
        super().__init__()
        proj = out_ch * 2 if maxout else out_ch
        layers: List[nn.Module] = []
        if src < dst:
            factor = dst // src
            if down == "maxpool":
                layers += [nn.MaxPool2d(factor, factor), ConvNormAct(in_ch, proj, 1, act=act)]
            elif down == "conv":
                steps = int(math.log2(factor))
                for i in range(steps):
                    layers.append(ConvNormAct(in_ch if i == 0 else proj, proj, 3, 2, act=act))
            else:
                raise ConfigError(f"model.neck.down must be 'maxpool' or 'conv', got '{down}'")
        else:
            layers.append(ConvNormAct(in_ch, proj, 1, act=act))
        if maxout:
            layers.append(Maxout())
        if src > dst:
            layers.append(nn.Upsample(scale_factor=src // dst, mode="nearest"))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)

    def reparameterize(self, align: bool = True) -> "Resample":
        """Deployed form (in place): the projection conv + Maxout as one :class:`MaxoutConv`."""
        for i in range(1, len(self.body)):
            unit = self.body[i - 1]
            if isinstance(self.body[i], Maxout) and unit.conv.out_channels % 2 == 0:
                self.body[i - 1] = MaxoutConv(as_conv_act(unit))
                self.body[i] = nn.Identity()
        return self


# --------------------------------------------------------------------------------------------
# EFM
# --------------------------------------------------------------------------------------------

@dataclass
class EFMConfig:
    """Exact Fusion Model options (``model.neck`` with ``type: efm``).

    channels: width of each compressed input of a level (int or one per level); a level's
        fused map has ``n_inputs * channels`` channels (``2x`` that with ``maxout: false``).
    maxout: compress each input with Maxout (projection to 2x width, then max over halves).
        ``false`` keeps the 2x-wide projections uncompressed (the paper's ablation).
    refine: "sam" (SAM on every fused map), "spp" (YOLOv5's squeeze SPP, :class:`SqueezeSPP`,
        on the stride-32 backbone feature before fusion) or "none".
    down: how the s-1 input is down-sampled: "maxpool" (2x2 max-pool + 1x1) or "conv" (3x3 s2).
    act: activation of the neck's convs (see :mod:`detector.models.layers`; default darknet's
        leaky, ``{name: leaky_relu, negative_slope: 0.1}``); spp_kernels: SPP max-pool sizes.
    """
    type: str = "efm"
    channels: IntOrList = 32
    maxout: bool = True
    refine: str = "sam"
    down: str = "maxpool"
    act: Any = field(default_factory=darknet_leaky)
    spp_kernels: Tuple[int, ...] = (5, 9, 13)


class EFM(nn.Module):
    """Exact Fusion Model: level ``s`` = concat(down(F[s/2]), F[s], up(F[2s])), compressed.

    Inputs that the backbone does not have (no stride-4 feature, nothing coarser than 32) are
    skipped, so the coarsest level fuses two inputs.
    """

    def __init__(self, cfg: EFMConfig, feature_channels: Sequence[int],
                 feature_strides: Sequence[int], strides: Sequence[int]):
        super().__init__()
        if cfg.refine not in ("sam", "spp", "none"):
            raise ConfigError(f"model.neck.refine must be 'sam', 'spp' or 'none', got '{cfg.refine}'")
        self.cfg = cfg
        self.strides = list(strides)
        act = get_act(cfg.act, where="model.neck.act")
        widths = _per_level(cfg.channels, len(strides), "channels")
        fs = list(feature_strides)
        for s in strides:
            _feature_index(fs, s, f"EFM level of stride {s}")
        self.spp = None
        self.spp_index = -1
        if cfg.refine == "spp":
            self.spp_index = _feature_index(fs, max(strides), "EFM refine: spp")
            c = feature_channels[self.spp_index]
            self.spp = SqueezeSPP(c, c, cfg.spp_kernels, act)
        self.inputs: List[List[int]] = []  # backbone feature indices per level
        self.levels = nn.ModuleList()
        self.refines = nn.ModuleList()
        self.out_channels: List[int] = []
        for s, width in zip(strides, widths):
            idx = [fs.index(t) for t in (s // 2, s, s * 2) if t in fs]
            branches = nn.ModuleList(
                Resample(feature_channels[i], width if cfg.maxout else 2 * width, fs[i], s,
                         act, cfg.down, cfg.maxout)
                for i in idx)
            fused = len(idx) * width * (1 if cfg.maxout else 2)
            self.inputs.append(idx)
            self.levels.append(branches)
            self.refines.append(SAM(fused) if cfg.refine == "sam" else nn.Identity())
            self.out_channels.append(fused)

    def forward(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        feats = list(feats)
        if self.spp is not None:
            feats[self.spp_index] = self.spp(feats[self.spp_index])
        outs = []
        for idx, branches, refine in zip(self.inputs, self.levels, self.refines):
            fused = torch.cat([b(feats[i]) for i, b in zip(idx, branches)], 1)
            outs.append(refine(fused))
        return outs


# --------------------------------------------------------------------------------------------
# GFM
# --------------------------------------------------------------------------------------------

@dataclass
class GFMConfig:
    """Global Fusion Model options (``model.neck`` with ``type: gfm``).

    channels: output width of every level (int or one per level); every backbone scale among
        the output strides (and stride 4 when present) is projected to it and summed, plus a
        global-average-pooled context of the deepest feature (ThunderNet's CEM).
    refine: "sam" or "none" on each fused map; act, down: as for EFM.
    """
    type: str = "gfm"
    channels: IntOrList = 96
    refine: str = "sam"
    down: str = "maxpool"
    act: Any = field(default_factory=darknet_leaky)


class GFM(nn.Module):
    """Global fusion: level ``s`` = sum over all scales t of resample(F[t] -> s) + global context."""

    def __init__(self, cfg: GFMConfig, feature_channels: Sequence[int],
                 feature_strides: Sequence[int], strides: Sequence[int]):
        super().__init__()
        if cfg.refine not in ("sam", "none"):
            raise ConfigError(f"model.neck.refine for gfm must be 'sam' or 'none', got '{cfg.refine}'")
        self.strides = list(strides)
        act = get_act(cfg.act, where="model.neck.act")
        widths = _per_level(cfg.channels, len(strides), "channels")
        fs = list(feature_strides)
        for s in strides:
            _feature_index(fs, s, f"GFM level of stride {s}")
        self.sources = [i for i, t in enumerate(fs) if min(strides) // 2 <= t <= max(strides)]
        deepest = self.sources[-1]
        self.deepest = deepest
        self.levels = nn.ModuleList()
        self.contexts = nn.ModuleList()
        self.refines = nn.ModuleList()
        self.out_channels = widths
        for s, width in zip(strides, widths):
            self.levels.append(nn.ModuleList(
                Resample(feature_channels[i], width, fs[i], s, act, cfg.down) for i in self.sources))
            self.contexts.append(nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                               ConvNormAct(feature_channels[deepest], width, 1, act=act)))
            self.refines.append(SAM(width) if cfg.refine == "sam" else nn.Identity())

    def forward(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        outs = []
        for branches, context, refine in zip(self.levels, self.contexts, self.refines):
            fused = context(feats[self.deepest])  # (B, C, 1, 1), broadcast over the map
            for i, branch in zip(self.sources, branches):
                fused = fused + branch(feats[i])
            outs.append(refine(fused))
        return outs


# --------------------------------------------------------------------------------------------
# PANet (SPP)
# --------------------------------------------------------------------------------------------

@dataclass
class PANetConfig:
    """PANet with SPP (YOLOv4's neck; ``model.neck`` with ``type: panet``).

    channels: width of each level (one per output stride, finest first), e.g. [128, 256, 512].
    spp: the SPP block between the deepest level's first three convs and its last three:
        "darknet" (yolov4.cfg's parameter-free :class:`SPP`: pools concatenated with the input,
        4x the channels into the next 1x1 conv), "yolov5" (:class:`SqueezeSPP`: 1x1 squeeze,
        pools, 1x1 expand) or "none" (a plain ``block_depth`` conv set). The booleans of older
        configs and checkpoints read as ``true`` = "yolov5" (the form they were built with),
        ``false`` = "none". spp_kernels: the pool sizes.
    block_depth: convs per fusion block, alternating 1x1 / 3x3 (YOLOv3/v4 use 5).
    act: activation (default darknet's leaky, slope 0.1).
    """
    type: str = "panet"
    channels: IntOrList = (128, 256, 512)
    spp: Any = "darknet"
    spp_kernels: Tuple[int, ...] = (5, 9, 13)
    block_depth: int = 5
    act: Any = field(default_factory=darknet_leaky)

    def __post_init__(self):
        if isinstance(self.spp, bool):  # configs and checkpoints written before the two forms
            self.spp = "yolov5" if self.spp else "none"
        if self.spp not in SPP_FORMS:
            raise ConfigError(f"model.neck.spp must be one of {', '.join(SPP_FORMS)}, got "
                              f"{self.spp!r}")


SPP_FORMS = ("darknet", "yolov5", "none")


def conv_set(in_ch: int, ch: int, depth: int, act: LayerSpec) -> nn.Sequential:
    """YOLO's conv set: 1x1 (ch), 3x3 (2ch), 1x1 (ch), ... ``depth`` convs, ending with ch."""
    layers, c = [], in_ch
    for i in range(depth):
        out = ch if i % 2 == 0 else ch * 2
        layers.append(ConvNormAct(c, out, 1 if i % 2 == 0 else 3, act=act))
        c = out
    if depth % 2 == 0:  # always end on ``ch`` channels
        layers.append(ConvNormAct(c, ch, 1, act=act))
    return nn.Sequential(*layers)


class PANet(nn.Module):
    """SPP on the deepest feature, top-down FPN with concat, then bottom-up path aggregation."""

    def __init__(self, cfg: PANetConfig, feature_channels: Sequence[int],
                 feature_strides: Sequence[int], strides: Sequence[int]):
        super().__init__()
        if cfg.block_depth < 1:
            raise ConfigError("model.neck.block_depth must be >= 1")
        self.strides = list(strides)
        n = len(strides)
        w = _per_level(cfg.channels, n, "channels")
        self.idx = [_feature_index(feature_strides, s, f"PANet level of stride {s}") for s in strides]
        cin = [feature_channels[i] for i in self.idx]
        act = get_act(cfg.act, where="model.neck.act")
        # deepest level: conv set with SPP in the middle (YOLOv4: 3 convs, SPP, 3 convs)
        if cfg.spp == "darknet":
            spp = SPP(w[-1], cfg.spp_kernels)
            self.top = nn.Sequential(conv_set(cin[-1], w[-1], 3, act), spp,
                                     conv_set(spp.out_channels, w[-1], 3, act))
        elif cfg.spp == "yolov5":
            self.top = nn.Sequential(conv_set(cin[-1], w[-1], 3, act),
                                     SqueezeSPP(w[-1], w[-1], cfg.spp_kernels, act),
                                     conv_set(w[-1], w[-1], 3, act))
        else:
            self.top = conv_set(cin[-1], w[-1], cfg.block_depth, act)
        # top-down
        self.lateral = nn.ModuleList()
        self.reduce = nn.ModuleList()
        self.td_blocks = nn.ModuleList()
        for i in range(n - 2, -1, -1):
            self.reduce.append(nn.Sequential(ConvNormAct(w[i + 1], w[i], 1, act=act),
                                             nn.Upsample(scale_factor=strides[i + 1] // strides[i])))
            self.lateral.append(ConvNormAct(cin[i], w[i], 1, act=act))
            self.td_blocks.append(conv_set(2 * w[i], w[i], cfg.block_depth, act))
        # bottom-up
        self.downs = nn.ModuleList()
        self.bu_blocks = nn.ModuleList()
        for i in range(1, n):
            self.downs.append(ConvNormAct(w[i - 1], w[i], 3, strides[i] // strides[i - 1], act=act))
            self.bu_blocks.append(conv_set(2 * w[i], w[i], cfg.block_depth, act))
        self.out_channels = w

    def forward(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        xs = [feats[i] for i in self.idx]
        n = len(xs)
        td = [None] * n
        td[-1] = self.top(xs[-1])
        for k, i in enumerate(range(n - 2, -1, -1)):
            td[i] = self.td_blocks[k](torch.cat([self.lateral[k](xs[i]), self.reduce[k](td[i + 1])], 1))
        outs = [td[0]]
        for k, i in enumerate(range(1, n)):
            outs.append(self.bu_blocks[k](torch.cat([self.downs[k](outs[-1]), td[i]], 1)))
        return outs


from .prn import PRN, PRNConfig  # noqa: E402
NECKS = {"efm": (EFMConfig, EFM), "gfm": (GFMConfig, GFM), "panet": (PANetConfig, PANet), "prn": (PRNConfig, PRN)}


def parse_neck_config(d) -> object:
    """Read ``model.neck`` into the dataclass its ``type`` names (unknown keys refused)."""
    if not isinstance(d, dict) and not hasattr(d, "type"):
        raise ConfigError(f"model.neck must be a mapping with a 'type', got {type(d).__name__}")
    kind = d.get("type") if isinstance(d, dict) else d.type
    if kind not in NECKS:
        raise ConfigError(f"unknown neck type '{kind}' in model.neck.type; choose one of "
                          f"{', '.join(NECKS)}")
    return from_dict(NECKS[kind][0], d, "model.neck")


def build_neck(cfg, feature_channels: Sequence[int], feature_strides: Sequence[int],
               strides: Sequence[int]) -> nn.Module:
    """Build the neck named by ``cfg.type`` for a backbone's features and the head's strides."""
    cfg = parse_neck_config(cfg)
    return NECKS[cfg.type][1](cfg, list(feature_channels), list(feature_strides), list(strides))
