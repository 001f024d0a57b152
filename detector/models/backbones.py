"""CSP backbones and their plain baselines, built from configs (``configs/backbones/*.yaml``).

One family, ``arch: cspnet``: a stem, then a list of stages, each a :class:`~.blocks.CSPStage`
(``csp: true``) or a :class:`~.blocks.PlainStage`, each repeating one block type. ResNet,
ResNeXt, Darknet, DenseNet and PeleeNet and their CSP versions are all instances; the YAML
holds the whole definition. ``arch`` may also name a file of ``configs/backbones/`` (e.g.
``{arch: csppeleenet, num_classes: 0}``): that file's ``model`` section is the base and the
other keys override it.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from ..config import (ConfigError, PathOrDict, check_keys, closest_key, configs_root, from_dict,
                      load_config)
from .blocks import CSPStage, PeleeStem, PlainStage, get_block
from .deploy import as_conv_act, cat, fold_batchnorm, input_cuts, piece_form
from .layers import ConvNormAct, check_channels, get_act, get_norm

CONFIG_DIR = configs_root() / "backbones"  # arch presets: configs/backbones/<arch>.yaml
FEATURE_STRIDES = (4, 8, 16, 32)


@dataclass
class StemConfig:
    """``conv``: convs ``conv1..N`` (first one strided) then an optional max-pool (ResNet,
    Darknet); ``pelee``: PeleeNet's two-branch stem (stride 4, ``channels[0]`` wide)."""
    type: str = "conv"
    channels: Tuple[int, ...] = (64,)
    kernel_size: int = 7
    stride: int = 2
    pool: str = "max"            # max | none
    pool_kernel: int = 3


@dataclass
class StageConfig:
    """One stage. ``None`` means: the block's own default (``bottle_ratio``) or the input
    width (``down_channels``)."""
    depth: int
    out_channels: int
    block: Any = "bottleneck"    # basic | bottleneck | resnext | dark | dense | pelee, or a
                                 # block class / callable (see detector.models.blocks)
    stride: int = 2
    csp: bool = True
    down: str = "conv"           # conv | avgpool | maxpool | block (plain only) | none
    down_kernel: int = 3
    down_channels: Optional[int] = None
    down_groups: int = 1         # grouped down conv (timm's cspresnext50 uses 32)
    # CSP options
    split_ratio: float = 0.5     # gamma: share of channels through the blocks, in (0, 1)
    fusion: str = "both"         # both (transition-concat-transition) | first | last
    split: str = "conv"          # conv (1x1 + slice, timm) | two_conv | slice (no conv)
    expand_ratio: float = 1.0    # width of the split conv relative to out_channels
    expand_act: bool = True      # False: linear split conv (timm's cross_linear)
    transition_channels: Optional[int] = None
    # block options
    block_ratio: Optional[float] = None  # block width / out_channels; None: the split part
                                         # (CSP) or out_channels (plain)
    bottle_ratio: Optional[float] = None
    groups: int = 1
    growth_rate: int = 32
    shortcut: str = "projection"  # ResNet blocks: projection (torchvision) | darknet (no params)
    transition: bool = False     # plain stages: 1x1 transition conv at the end (DenseNet)


@dataclass
class CSPNetConfig:
    """A whole backbone / classifier. ``stage_defaults`` is merged under every stage."""
    arch: str = "cspnet"
    name: str = ""
    in_channels: int = 3
    num_classes: int = 1000
    stem: StemConfig = field(default_factory=StemConfig)
    stages: Tuple[Any, ...] = ()
    stage_defaults: Optional[dict] = None
    norm: Any = "batchnorm"
    # a name, or {name: leaky_relu, negative_slope: 0.1} (darknet's leaky); see models.layers
    act: Any = "leaky_relu"
    act_slope: Optional[float] = None   # older spelling of act's negative_slope (leaky_relu only)
    feature_channels: Optional[int] = None  # 1x1 conv after the last stage, before pooling
    global_pool: str = "avg"     # avg | max
    dropout: float = 0.0
    paper: Optional[dict] = None  # reference figures this config aims at (docs / benchmark)


def parse_stages(cfg: CSPNetConfig) -> List[StageConfig]:
    """Stage mappings (with ``stage_defaults`` under them) -> validated :class:`StageConfig`."""
    defaults = dict(cfg.stage_defaults or {})
    names = [f.name for f in dataclasses.fields(StageConfig)]
    check_keys(defaults, names, "model.stage_defaults")
    stages = []
    for i, s in enumerate(cfg.stages):
        if isinstance(s, StageConfig):
            stages.append(s)
            continue
        if not isinstance(s, Mapping):
            raise ConfigError(f"model.stages[{i}] must be a mapping, got {type(s).__name__}")
        stages.append(from_dict(StageConfig, {**defaults, **s}, f"model.stages[{i}]"))
    if not stages:
        raise ConfigError("model.stages is empty: a backbone needs at least one stage")
    return stages


class ClassifierHead(nn.Module):
    """Global pool -> dropout -> ``fc`` (timm's ``head.fc`` key names)."""

    def __init__(self, in_channels: int, num_classes: int, pool: str = "avg", dropout: float = 0.0):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ConfigError(f"global_pool must be 'avg' or 'max', got '{pool}'")
        self.global_pool = nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x):
        return self.fc(self.drop(torch.flatten(self.global_pool(x), 1)))


class CSPBackbone(nn.Module):
    """Stem + stages (+ classifier head when ``num_classes > 0``), from a :class:`CSPNetConfig`.

    ``forward_features(x)`` returns the last stage output at each stride of 4 (where the
    network has one), 8, 16 and 32, described by ``feature_channels`` / ``feature_strides``.
    """

    stage_where = "model.stages"  # how errors name a stage

    def __init__(self, cfg: CSPNetConfig):
        super().__init__()
        self.config = cfg
        self.name = cfg.name or cfg.arch
        self.in_channels, self.num_classes = cfg.in_channels, cfg.num_classes
        norm = get_norm(cfg.norm, where="model.norm")
        act = _backbone_act(cfg)
        self.stem, c, stride = _build_stem(cfg.stem, cfg.in_channels, norm, act)
        self.stem_channels, self.stem_stride = c, stride

        self.stages = nn.Sequential()
        self.stage_channels, self.stage_strides = [], []
        for i, s in enumerate(parse_stages(cfg)):
            opts = dict(norm=norm, act=act, groups=s.groups, growth_rate=s.growth_rate,
                        shortcut=s.shortcut,
                        block_ratio=s.block_ratio, down=s.down, down_kernel=s.down_kernel,
                        down_channels=s.down_channels, down_groups=s.down_groups)
            if s.bottle_ratio is not None:
                opts["bottle_ratio"] = s.bottle_ratio
            try:
                if s.csp:
                    stage = CSPStage(c, s.out_channels, s.depth, s.block, s.stride,
                                     split_ratio=s.split_ratio, fusion=s.fusion, split=s.split,
                                     expand_ratio=s.expand_ratio, expand_act=s.expand_act,
                                     transition_channels=s.transition_channels, **opts)
                else:
                    stage = PlainStage(c, s.out_channels, s.depth, s.block, s.stride,
                                       transition=s.transition, **opts)
            except (ValueError, TypeError) as e:  # name the stage the problem is in
                where = f"{self.stage_where}[{i}]"
                if str(e).startswith(where):
                    raise
                raise (ConfigError if isinstance(e, ValueError) else TypeError)(
                    f"{where}: {e}") from e
            self.stages.add_module(str(i), stage)
            c, stride = s.out_channels, stride * s.stride
            self.stage_channels.append(c)
            self.stage_strides.append(stride)

        # feature taps: the last stage at each of the strides 4, 8, 16, 32
        self.feature_indices = [max(i for i, st in enumerate(self.stage_strides) if st == s)
                                for s in FEATURE_STRIDES if s in self.stage_strides]
        self.feature_channels = [self.stage_channels[i] for i in self.feature_indices]
        self.feature_strides = [self.stage_strides[i] for i in self.feature_indices]
        has_head = bool(cfg.num_classes and cfg.num_classes > 0)
        if not has_head and self.feature_strides[-3:] != [8, 16, 32]:
            raise ConfigError(f"backbone '{self.name}' must reach strides 8, 16 and 32 to feed a "
                              f"detector; its stages have strides {self.stage_strides}")
        self.conv_head = (ConvNormAct(c, cfg.feature_channels, 1, 1, 1, norm, act)
                          if cfg.feature_channels and has_head else None)
        self.num_features = cfg.feature_channels or c
        self.head = (ClassifierHead(self.num_features, cfg.num_classes, cfg.global_pool, cfg.dropout)
                     if has_head else None)
        _init_weights(self)

    def _run(self, x: torch.Tensor, taps: bool):
        check_channels(x, self.in_channels, f"{self.name} input")
        x = self.stem(x)
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if taps and i in self.feature_indices:
                feats.append(x)
        return feats, x

    def forward_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self._run(x, taps=True)[0]

    def forward(self, x: torch.Tensor):
        if self.head is None:
            return self.forward_features(x)
        x = self._run(x, taps=False)[1]  # the last stage, even past stride 32
        if self.conv_head is not None:
            x = self.conv_head(x)
        return self.head(x)

    def reparameterize(self, align: bool = True) -> "DeployBackbone":
        """The deployed form (:mod:`detector.models.deploy`): BatchNorm folded, stem and stages
        on piece lists; same outputs. ``align`` pads narrow bottlenecks to the NCHWc block."""
        fold_batchnorm(self.eval())
        return DeployBackbone(self, align).eval()


class DeployBackbone(nn.Module):
    """A :class:`CSPBackbone`, re-parameterised for deployment.

    Same interface (``forward_features``, ``forward``, ``feature_channels``, ...), same
    outputs; the stem and stages pass piece lists between them, each stage's input cut where
    the stage after it splits (see :mod:`detector.models.deploy`).
    """

    COPIED = ("config", "name", "in_channels", "num_classes", "stem_channels", "stem_stride",
              "stage_channels", "stage_strides", "feature_indices", "feature_channels",
              "feature_strides", "num_features")

    def __init__(self, backbone: CSPBackbone, align: bool = True):
        super().__init__()
        for key in self.COPIED:
            if hasattr(backbone, key):
                setattr(self, key, getattr(backbone, key))
        stages = list(backbone.stages)
        needs = [set() for _ in stages]  # the cuts each stage's output needs, planned backwards
        stem_needs: set = set()
        for i in range(len(stages) - 1, -1, -1):
            (needs[i - 1] if i > 0 else stem_needs).update(input_cuts(stages[i], needs[i]))
        self.stem = piece_form(backbone.stem, stem_needs, align)
        self.stages = nn.ModuleList(piece_form(s, needs[i], align) for i, s in enumerate(stages))
        self.conv_head = as_conv_act(backbone.conv_head) if getattr(backbone, "conv_head", None) is not None else None
        self.head = copy.deepcopy(getattr(backbone, "head", None))

    def forward_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        pieces = self.stem(x)
        feats = []
        for i, stage in enumerate(self.stages):
            pieces = stage(pieces)
            if i in self.feature_indices:
                feats.append(cat(pieces))
        return feats

    def forward(self, x: torch.Tensor):
        feats = self.forward_features(x)
        if self.head is None:
            return feats
        x = feats[-1]
        if self.conv_head is not None:
            x = self.conv_head(x)
        return self.head(x)


class CSPNet(CSPBackbone):
    """Generic CSP classifier with a short signature (the reference CSPNet API)::

        from detector.models import CSPNet, ResNetBottleneck
        model = CSPNet(in_channels=3, stem_channels=64,
                       stage_defs=[(3, 256, ResNetBottleneck, True), (4, 512, ResNetBottleneck, True),
                                   (6, 1024, ResNetBottleneck, True), (3, 2048, ResNetBottleneck, True)],
                       num_classes=1000, split_ratio=0.5)

    ``stage_defs``: list of ``(num_blocks, out_channels, block, downsample)``; every stage is a
    CSP stage (:class:`~.blocks.CSPStage`) with partial ratio ``split_ratio``. ``block`` is a
    block name (``'basic'``, ``'bottleneck'``, ``'resnext'``, ``'dark'``, ``'dense'``,
    ``'pelee'``), one of our classes (``ResNetBasicBlock``, ``ResNetBottleneck``,
    ``ResNeXtBottleneck``, ``DarknetBottleneck``, ``DenseLayer``, ``TwoWayDenseLayer``) or any
    class / callable following the block contract::

        block(in_channels, out_channels, stride=1, *, norm=..., act=..., **options) -> nn.Module

    It is called with stride 1 on the block part of the split (the stage downsamples before the
    split); keywords it does not declare are not passed, and an ``out_channels`` attribute on
    the module, if any, tells the stage the width it hands on (else ``out_channels``).
    ``pre_kernel_size`` picks the downsampling style: 1 = ResNet (7x7 s2 stem + max-pool; each
    downsampling stage starts with a 1x1 stride-2 conv), 3 = Darknet (3x3 s1 stem; 3x3
    stride-2 down convs). ``feature_channels``: width of an optional 1x1 conv-norm-act before
    global pooling. A malformed ``stage_defs`` entry is a ``ConfigError`` naming it.
    """

    stage_where = "stage_defs"

    def __init__(self, in_channels=3, stem_channels=64, stage_defs=None, num_classes=1000,
                 norm=nn.BatchNorm2d, act=nn.ReLU, split_ratio=0.5, global_pool="avg",
                 dropout=0.0, feature_channels=None, pre_kernel_size=1):
        if pre_kernel_size not in (1, 3):
            raise ValueError(f"pre_kernel_size must be 1 (ResNet-style) or 3 (Darknet-style), "
                             f"got {pre_kernel_size}")
        if stage_defs is None:  # CSPResNet10-like
            stage_defs = [(1, 64, "basic", False), (1, 128, "basic", True),
                          (1, 256, "basic", True), (1, 512, "basic", True)]
        if pre_kernel_size == 1:
            stem = StemConfig(channels=(stem_channels,), kernel_size=7, stride=2, pool="max")
        else:
            stem = StemConfig(channels=(stem_channels,), kernel_size=3, stride=1, pool="none")
        stages = []
        for i, d in enumerate(_check_stage_defs(stage_defs)):
            n, out, block, downsample = d
            stages.append(StageConfig(
                depth=int(n), out_channels=int(out), block=block, stride=2 if downsample else 1,
                down="conv" if downsample else "none", down_kernel=pre_kernel_size,
                down_channels=int(out), split_ratio=split_ratio))
        cfg = CSPNetConfig(name="cspnet", in_channels=in_channels, num_classes=num_classes,
                           stem=stem, stages=tuple(stages), norm=norm, act=act, act_slope=None,
                           feature_channels=feature_channels, global_pool=global_pool,
                           dropout=dropout)
        super().__init__(cfg)


def _check_stage_defs(stage_defs) -> list:
    """Validate ``CSPNet``'s ``stage_defs`` entry by entry, naming the first bad one."""
    form = "(num_blocks, out_channels, block, downsample)"
    if isinstance(stage_defs, (str, bytes)) or not isinstance(stage_defs, (list, tuple)):
        raise ConfigError(f"stage_defs must be a list of {form} tuples, got {stage_defs!r}")
    if not stage_defs:
        raise ConfigError("stage_defs is empty: a CSPNet needs at least one stage")
    out = []
    for i, d in enumerate(stage_defs):
        where = f"stage_defs[{i}] = {d!r}"
        if not isinstance(d, (list, tuple)) or len(d) != 4:
            raise ConfigError(f"{where}: each entry must be {form}")
        n, channels, block, downsample = d
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"{where}: num_blocks must be an int >= 1, got {n!r}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 2:
            raise ConfigError(f"{where}: out_channels must be an int >= 2, got {channels!r}")
        if not isinstance(downsample, bool):
            raise ConfigError(f"{where}: downsample must be True or False, got {downsample!r}")
        get_block(block, where=f"{where}: block")
        out.append((n, channels, block, downsample))
    return out


def _backbone_act(cfg: CSPNetConfig):
    """The activation factory of ``model.act``; the older ``act_slope`` key applies to a
    LeakyReLU and is ignored for other activations, as it always was (checkpoints saved its
    default 0.01 next to any activation)."""
    act = get_act(cfg.act, where="model.act")
    base = act.func if isinstance(act, functools.partial) else act
    if cfg.act_slope is not None and base is nn.LeakyReLU:
        act = get_act(cfg.act, cfg.act_slope, where="model.act")
    return act


def _build_stem(cfg: StemConfig, in_channels: int, norm, act):
    if cfg.type == "pelee":
        stem = PeleeStem(in_channels, cfg.channels[0], norm=norm, act=act)
        return stem, stem.out_channels, stem.stride
    if cfg.type != "conv":
        raise ConfigError(f"unknown stem type '{cfg.type}'{closest_key(cfg.type, ['conv', 'pelee'])}; "
                          "known: conv, pelee")
    stem = nn.Sequential()
    c, stride = in_channels, 1
    for i, out in enumerate(cfg.channels):
        s = cfg.stride if i == 0 else 1
        stem.add_module(f"conv{i + 1}", ConvNormAct(c, out, cfg.kernel_size, s, 1, norm, act))
        c, stride = out, stride * s
    if cfg.pool == "max":
        k = cfg.pool_kernel
        stem.add_module("pool", nn.MaxPool2d(k, 2, padding=(k - 1) // 2))
        stride *= 2
    elif cfg.pool not in ("none", "", None):
        raise ConfigError(f"stem pool must be 'max' or 'none', got '{cfg.pool}'")
    return stem, c, stride


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------- builder

def resolve_backbone_config(cfg: PathOrDict) -> dict:
    """A backbone config path, a full config dict or a ``model`` section -> the model dict.

    ``arch`` naming a file ``configs/backbones/<arch>.yaml`` pulls that file in as the base.
    """
    if not isinstance(cfg, Mapping):
        data = load_config(cfg)
        if "model" not in data:
            raise ConfigError(f"{cfg}: a backbone config needs a 'model' section")
        cfg = data["model"]
    elif "model" in cfg and isinstance(cfg["model"], Mapping):
        cfg = cfg["model"]
    cfg = dict(cfg)
    cfg.pop("_source", None)
    arch = cfg.get("arch", "cspnet")
    if arch != "cspnet":
        path = CONFIG_DIR / f"{arch}.yaml"
        if not path.is_file():
            known = ["cspnet"] + sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
            raise ConfigError(f"unknown backbone arch '{arch}'{closest_key(arch, known)}; known: "
                              f"{', '.join(known)}")
        base = resolve_backbone_config(path)
        overrides = {k: v for k, v in cfg.items() if k != "arch"}
        cfg = _deep_merge(base, overrides)
    return cfg


def build_backbone(cfg: PathOrDict, num_classes: Optional[int] = None) -> CSPBackbone:
    """Backbone / classifier from a config (path, dict or ``model`` section).

    ``num_classes`` overrides the config: 0 gives a features-only backbone (for detectors).
    """
    model_cfg = resolve_backbone_config(cfg)
    if num_classes is not None:
        model_cfg["num_classes"] = num_classes
    return CSPBackbone(from_dict(CSPNetConfig, model_cfg, "model"))


def _deep_merge(base: dict, over: Mapping) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(dict(out[k]), v)
        else:
            out[k] = v
    return out

