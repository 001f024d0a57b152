"""Building blocks of the CSP backbones: the blocks a stage repeats, the CSP and plain stages.

The layers they are made of (conv-norm-act, activation and norm lookup) live in
:mod:`detector.models.layers`.

Module and attribute names follow timm's ``cspnet.py`` (``conv``/``bn`` inside a conv-norm-act,
``conv1..3`` inside blocks, ``conv_down``/``conv_exp``/``blocks``/``conv_transition_b``/
``conv_transition`` inside a stage) so timm checkpoints map onto ours key for key, and so the
detector's ``fuse()`` finds every ``conv`` + ``bn`` pair.

Deployed forms (:mod:`detector.models.deploy`) live here too: a CSP stage builds its piece-list
form (:class:`PieceStage`), blocks pad their own bottlenecks (``align_widths``) and plain
stages and the Pelee stem name their output conv (``output_unit``).
"""
from __future__ import annotations

import copy
import inspect
from typing import Callable, Iterable, Optional, Union

import torch
import torch.nn as nn

from ..config import ConfigError, closest_key
from .deploy import (Pieces, align_blocks, as_conv_act, cat, channelwise, convert_units, pad_pair,
                     split_rows, take)
from .layers import ConvNormAct, check_channels, get_act, get_norm  # noqa: F401 (re-exported)

# ----------------------------------------------------------------------------- blocks
# The block contract (ours, and any class or callable a user passes as a stage's block):
#     block(in_channels, out_channels, stride=1, *, norm=<norm factory>, act=<act factory>,
#           **options) -> nn.Module
# Keywords the callable does not accept are not passed (see make_block). The module's
# ``out_channels`` attribute, when it has one, is the width the next block gets; dense layers
# grow their input instead (``in_channels + growth_rate``; ``out_channels`` is ignored).
# A block may also have ``align_widths()``: in its deployed form (BatchNorm folded, units as
# ``deploy.ConvAct``) it pads a bottleneck narrower than the NCHWc block (detector.models.deploy).


class _AlignConv1(nn.Module):
    """Base of the blocks whose ``conv1`` feeds ``conv2`` alone."""

    def align_widths(self) -> None:
        """Deployed form: ``conv1``'s output padded to the NCHWc block (exact)."""
        pad_pair(self.conv1, self.conv2)


class ResNetBasicBlock(_AlignConv1):
    """ResNet basic block: 3x3 -> 3x3 (linear) + shortcut, then the activation."""

    def __init__(self, in_channels, out_channels, stride=1, *, norm=nn.BatchNorm2d, act=nn.ReLU,
                 groups=1, shortcut="projection", **_):
        super().__init__()
        self.conv1 = ConvNormAct(in_channels, out_channels, 3, stride, groups, norm, act)
        self.conv2 = ConvNormAct(out_channels, out_channels, 3, 1, groups, norm, act, apply_act=False)
        self.shortcut = _shortcut(shortcut, in_channels, out_channels, stride, norm)
        self.act = get_act(act)()
        self.out_channels = out_channels

    def forward(self, x):
        return self.act(self.shortcut(self.conv2(self.conv1(x)), x))


class ResNetBottleneck(_AlignConv1):
    """ResNet bottleneck: 1x1 -> 3x3 (grouped for ResNeXt) -> 1x1 (linear) + shortcut, then act.

    ``bottle_ratio`` sets the inner width relative to ``out_channels`` (0.25 in torchvision's
    ResNet-50; timm's CSP stages use 0.5 or 1.0).
    """

    def __init__(self, in_channels, out_channels, stride=1, *, bottle_ratio=0.25, groups=1,
                 norm=nn.BatchNorm2d, act=nn.ReLU, shortcut="projection", **_):
        super().__init__()
        mid = int(round(out_channels * bottle_ratio))
        if mid % groups:
            raise ValueError(f"bottleneck width {mid} is not divisible by groups={groups}")
        self.conv1 = ConvNormAct(in_channels, mid, 1, 1, 1, norm, act)
        self.conv2 = ConvNormAct(mid, mid, 3, stride, groups, norm, act)
        self.conv3 = ConvNormAct(mid, out_channels, 1, 1, 1, norm, act, apply_act=False)
        self.shortcut = _shortcut(shortcut, in_channels, out_channels, stride, norm)
        self.act3 = get_act(act)()
        self.out_channels = out_channels

    def forward(self, x):
        return self.act3(self.shortcut(self.conv3(self.conv2(self.conv1(x))), x))


class ResNeXtBottleneck(ResNetBottleneck):
    """ResNeXt bottleneck: the ResNet bottleneck with a grouped 3x3 (cardinality ``groups``)."""

    def __init__(self, in_channels, out_channels, stride=1, *, groups=32, **kwargs):
        super().__init__(in_channels, out_channels, stride, groups=groups, **kwargs)


class DarkBlock(_AlignConv1):
    """Darknet residual: 1x1 (``bottle_ratio`` x out) -> 3x3 back to out, plus the input.

    Exported as ``DarknetBottleneck`` too (the reference CSPNet API's name)."""

    def __init__(self, in_channels, out_channels, stride=1, *, bottle_ratio=0.5, groups=1,
                 norm=nn.BatchNorm2d, act=nn.ReLU, **_):
        super().__init__()
        if stride != 1 or in_channels != out_channels:
            raise ValueError("a Darknet residual keeps its input shape: downsample with the "
                             f"stage's conv_down (got {in_channels}->{out_channels}, stride {stride})")
        mid = int(round(out_channels * bottle_ratio))
        self.conv1 = ConvNormAct(in_channels, mid, 1, 1, 1, norm, act)
        self.conv2 = ConvNormAct(mid, out_channels, 3, 1, groups, norm, act)
        self.out_channels = out_channels

    def forward(self, x):
        return x + self.conv2(self.conv1(x))


class DenseLayer(_AlignConv1):
    """DenseNet layer (conv-BN-act order): 1x1 to ``bottle_ratio`` x growth -> 3x3 to growth;
    the output is ``cat[x, new]``."""

    def __init__(self, in_channels, out_channels=None, stride=1, *, growth_rate=32, bottle_ratio=4.0,
                 norm=nn.BatchNorm2d, act=nn.ReLU, **_):
        super().__init__()
        _check_dense_stride(stride)
        mid = int(round(growth_rate * bottle_ratio))
        self.conv1 = ConvNormAct(in_channels, mid, 1, 1, 1, norm, act)
        self.conv2 = ConvNormAct(mid, growth_rate, 3, 1, 1, norm, act)
        self.out_channels = in_channels + growth_rate

    def forward(self, x):
        return torch.cat([x, self.conv2(self.conv1(x))], 1)


class TwoWayDenseLayer(nn.Module):
    """PeleeNet two-way dense layer: branch 1 is 1x1 -> 3x3, branch 2 is 1x1 -> 3x3 -> 3x3
    (a 5x5 receptive field), each adding ``growth_rate / 2`` channels; output ``cat[x, b1, b2]``.

    Inner width follows PeleeNet's reference code: ``growth/2 * bottle_ratio`` rounded down to a
    multiple of 4, capped at ``in_channels / 2`` (as ``in_channels // 8 * 4``).
    """

    def __init__(self, in_channels, out_channels=None, stride=1, *, growth_rate=32, bottle_ratio=1.0,
                 norm=nn.BatchNorm2d, act=nn.ReLU, **_):
        super().__init__()
        _check_dense_stride(stride)
        half = growth_rate // 2
        mid = int(half * bottle_ratio / 4) * 4
        if mid > in_channels / 2:
            mid = int(in_channels / 8) * 4
        mid = max(mid, 4)
        self.branch1a = ConvNormAct(in_channels, mid, 1, 1, 1, norm, act)
        self.branch1b = ConvNormAct(mid, half, 3, 1, 1, norm, act)
        self.branch2a = ConvNormAct(in_channels, mid, 1, 1, 1, norm, act)
        self.branch2b = ConvNormAct(mid, half, 3, 1, 1, norm, act)
        self.branch2c = ConvNormAct(half, half, 3, 1, 1, norm, act)
        self.out_channels = in_channels + 2 * half

    def align_widths(self) -> None:
        """Deployed form: each branch's 1x1 output padded to the NCHWc block (exact)."""
        pad_pair(self.branch1a, self.branch1b)
        pad_pair(self.branch2a, self.branch2b)

    def forward(self, x):
        b1 = self.branch1b(self.branch1a(x))
        b2 = self.branch2c(self.branch2b(self.branch2a(x)))
        return torch.cat([x, b1, b2], 1)


class PeleeStem(nn.Module):
    """PeleeNet stem (output stride 4): 3x3 s2 -> {1x1 -> 3x3 s2 | 2x2 max-pool} -> concat -> 1x1."""

    def __init__(self, in_channels=3, out_channels=32, *, norm=nn.BatchNorm2d, act=nn.ReLU):
        super().__init__()
        half = out_channels // 2
        self.conv1 = ConvNormAct(in_channels, out_channels, 3, 2, 1, norm, act)
        self.branch_a = ConvNormAct(out_channels, half, 1, 1, 1, norm, act)
        self.branch_b = ConvNormAct(half, out_channels, 3, 2, 1, norm, act)
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.fuse = ConvNormAct(2 * out_channels, out_channels, 1, 1, 1, norm, act)
        self.out_channels, self.stride = out_channels, 4

    def forward(self, x):
        x = self.conv1(x)
        return self.fuse(torch.cat([self.branch_b(self.branch_a(x)), self.pool(x)], 1))

    def output_unit(self) -> str:
        """The unit whose output is the stem's (its rows split in the deployed form)."""
        return "fuse"


DarknetBottleneck = DarkBlock

BLOCKS = {
    "basic": ResNetBasicBlock,
    "bottleneck": ResNetBottleneck,
    "resnext": ResNeXtBottleneck,
    "dark": DarkBlock,
    "dense": DenseLayer,
    "pelee": TwoWayDenseLayer,
}
DENSE_BLOCKS = ("dense", "pelee")
DENSE_CLASSES = (DenseLayer, TwoWayDenseLayer)

BlockSpec = Union[str, Callable[..., nn.Module]]


def get_block(block: BlockSpec, where: str = "block"):
    """A block class or callable from a config name (``'bottleneck'``) or the callable itself.

    A typo or a value that is neither is a :class:`ConfigError` naming ``where``.
    """
    if isinstance(block, str):
        if block not in BLOCKS:
            raise ConfigError(f"{where}: unknown block '{block}'{closest_key(block, BLOCKS)}; "
                              f"known blocks: {', '.join(BLOCKS)} (or pass a block class)")
        return BLOCKS[block]
    if callable(block):
        return block
    raise ConfigError(f"{where}: a block must be a name ({', '.join(BLOCKS)}) or a class / "
                      f"callable block(in_channels, out_channels, stride=1, **options), "
                      f"got {block!r}")


def is_dense(block: BlockSpec) -> bool:
    """Whether a block grows its input (dense layers) rather than mapping it to out_channels."""
    cls = BLOCKS.get(block) if isinstance(block, str) else block
    return isinstance(cls, type) and issubclass(cls, DENSE_CLASSES)


def make_block(block, in_channels: int, out_channels: int, stride: int = 1, **kwargs) -> nn.Module:
    """Call a block class / callable by the block contract, passing only the keywords it takes.

    Returns the module; a callable that fails or returns no ``nn.Module`` gets an error naming it.
    """
    name = getattr(block, "__name__", repr(block))
    try:
        params = inspect.signature(block).parameters
    except (TypeError, ValueError):  # no signature to read: call it by the full contract
        return _check_block(block(in_channels, out_channels, stride, **kwargs), name,
                            in_channels, out_channels)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if not var_kw:
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    if "stride" in params or var_kw:
        kwargs["stride"] = stride
    elif stride != 1:
        raise ValueError(f"block {name} takes no stride; it cannot start a stage with stride "
                         f"{stride} (downsample with the stage's conv_down instead)")
    try:
        module = block(in_channels, out_channels, **kwargs)
    except TypeError as e:
        raise TypeError(f"block {name} does not follow the block contract "
                        f"block(in_channels, out_channels, stride=1, **options): {e}") from e
    return _check_block(module, name, in_channels, out_channels)


def _check_block(module, name, in_channels, out_channels) -> nn.Module:
    if not isinstance(module, nn.Module):
        raise TypeError(f"block {name}({in_channels}, {out_channels}, ...) returned "
                        f"{type(module).__name__}, not an nn.Module")
    return module


def block_out_channels(module: nn.Module, default: int) -> int:
    """The width a block hands on: its ``out_channels`` attribute (an int), else ``default``."""
    c = getattr(module, "out_channels", None)
    return int(c) if isinstance(c, int) else default


class Shortcut(nn.Module):
    """``residual + shortcut(x)``. ``projection``: identity when shapes match, else a 1x1
    (strided) conv + norm (torchvision's ResNet). ``darknet``: darknet's parameter-free
    ``[shortcut]`` layer, which subsamples ``x`` by the stride and adds it to the first
    ``min(C_in, C_out)`` channels (the layout of the paper's darknet ResNet cfgs)."""

    def __init__(self, kind, in_channels, out_channels, stride, norm):
        super().__init__()
        if kind not in ("projection", "darknet"):
            raise ConfigError(f"unknown shortcut '{kind}'; known: projection, darknet")
        self.kind, self.stride = kind, stride
        self.partial = kind == "darknet" and in_channels != out_channels
        if kind == "projection" and (stride != 1 or in_channels != out_channels):
            self.proj = ConvNormAct(in_channels, out_channels, 1, stride, 1, norm, None, apply_act=False)

    def forward(self, residual, x):
        if hasattr(self, "proj"):
            return residual + self.proj(x)
        if self.kind == "darknet" and self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if not self.partial:
            return residual + x
        c = min(x.shape[1], residual.shape[1])
        return torch.cat([residual[:, :c] + x[:, :c], residual[:, c:]], 1)


def _shortcut(kind, in_channels, out_channels, stride, norm) -> nn.Module:
    return Shortcut(kind, in_channels, out_channels, stride, norm)


def _check_dense_stride(stride):
    if stride != 1:
        raise ValueError("dense layers keep resolution: downsample with the stage (down: avgpool)")


# ----------------------------------------------------------------------------- stages

FUSIONS = ("both", "first", "last")
SPLITS = ("conv", "two_conv", "slice")
DOWNS = ("conv", "avgpool", "maxpool", "block", "none")


def make_down(kind: str, in_channels: int, out_channels: int, stride: int, kernel_size: int,
              norm, act, groups: int = 1) -> tuple[Optional[nn.Module], int]:
    """The layer a stage starts with to reduce resolution; returns (module or None, channels)."""
    if kind not in DOWNS:
        raise ConfigError(f"unknown down '{kind}'{closest_key(kind, DOWNS)}; known: {', '.join(DOWNS)}")
    if kind == "none" and stride != 1:
        raise ConfigError(f"a stage with stride {stride} needs a down layer (conv, avgpool, "
                          "maxpool or block), not 'none'")
    if kind == "conv":
        return ConvNormAct(in_channels, out_channels, kernel_size, stride, groups, norm, act), out_channels
    if kind in ("avgpool", "maxpool") and stride > 1:
        pool = nn.AvgPool2d if kind == "avgpool" else nn.MaxPool2d
        return pool(stride, stride, ceil_mode=True), in_channels
    return None, in_channels  # 'block' (the first block strides), 'none', or a stride-1 pool


class CSPStage(nn.Module):
    """Cross Stage Partial stage (CSPNet paper, Sec. 3.1 / Fig. 3; timm's ``CrossStage``).

    down (optional) -> split into a bypass part (``1 - split_ratio``) and a block part
    (``split_ratio``) -> blocks on the block part -> fusion:

    - ``both`` (paper's main design): partial transition on the block part, concat, transition;
    - ``first``: concat, one transition (fewer FLOPs, loses gradient diversity);
    - ``last``: partial transition on the block part, concat, no stage transition.

    The split is a 1x1 conv (``conv_exp``) and a channel slice (``split='conv'``, timm), two 1x1
    convs, one per part (``'two_conv'``, darknet's form, same maths, no slice in the graph), or a
    slice of the stage input itself (``'slice'``).
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int,
                 block: BlockSpec = "bottleneck", stride: int = 2, *, down: str = "conv", down_kernel: int = 3,
                 down_channels: Optional[int] = None, down_groups: int = 1,
                 split_ratio: float = 0.5, fusion: str = "both",
                 split: str = "conv", expand_ratio: float = 1.0, expand_act: bool = True,
                 block_ratio: Optional[float] = None, transition_channels: Optional[int] = None,
                 norm=nn.BatchNorm2d, act=nn.ReLU, **block_options):
        super().__init__()
        if not 0.0 < float(split_ratio) < 1.0:
            raise ValueError(f"split_ratio must be in (0, 1) (the share of channels through the "
                             f"blocks), got {split_ratio}")
        if fusion not in FUSIONS:
            raise ConfigError(f"unknown fusion '{fusion}'{closest_key(fusion, FUSIONS)}; "
                              f"known: {', '.join(FUSIONS)}")
        if split not in SPLITS:
            raise ConfigError(f"unknown split '{split}'{closest_key(split, SPLITS)}; "
                              f"known: {', '.join(SPLITS)}")
        if down == "block":
            raise ConfigError("a CSP stage downsamples before the split: use down 'conv' or a pool")
        block_cls = get_block(block)
        self.fusion, self.split_mode = fusion, split

        self.conv_down, channels = make_down(down, in_channels, down_channels or in_channels,
                                             stride, down_kernel, norm, act, down_groups)
        self.conv_down = self.conv_down or nn.Identity()
        exp = channels if split == "slice" else int(round(out_channels * expand_ratio))
        block_in = int(round(exp * split_ratio))
        bypass = exp - block_in
        if block_in < 1 or bypass < 1:
            raise ValueError(f"split_ratio {split_ratio} of {exp} channels leaves an empty part")
        self.split_sizes = (bypass, block_in)
        exp_act = act if expand_act else None
        if split == "conv":
            self.conv_exp = ConvNormAct(channels, exp, 1, 1, 1, norm, exp_act)
        elif split == "two_conv":
            self.conv_part1 = ConvNormAct(channels, bypass, 1, 1, 1, norm, exp_act)
            self.conv_part2 = ConvNormAct(channels, block_in, 1, 1, 1, norm, exp_act)

        # residual blocks keep the width of the part they work on unless told otherwise
        block_out = block_in if block_ratio is None else int(round(out_channels * block_ratio))
        self.blocks = nn.Sequential()
        c = block_in
        for i in range(depth):
            blk = make_block(block_cls, c, block_out, 1, norm=norm, act=act, **block_options)
            self.blocks.add_module(str(i), blk)
            c = block_out_channels(blk, block_out)

        if fusion == "first":
            self.conv_transition = ConvNormAct(bypass + c, out_channels, 1, 1, 1, norm, act)
        elif fusion == "last":
            self.conv_transition_b = ConvNormAct(c, out_channels - bypass, 1, 1, 1, norm, act)
            if out_channels - bypass < 1:
                raise ValueError(f"fusion 'last' needs out_channels > bypass part ({bypass})")
        else:
            tb = transition_channels or (c if is_dense(block_cls) else block_in)
            self.conv_transition_b = ConvNormAct(c, tb, 1, 1, 1, norm, act)
            self.conv_transition = ConvNormAct(bypass + tb, out_channels, 1, 1, 1, norm, act)
        self.out_channels = out_channels

    def forward(self, x):
        x = self.conv_down(x)
        if self.split_mode == "two_conv":
            xs, xb = self.conv_part1(x), self.conv_part2(x)
        else:
            if self.split_mode == "conv":
                x = self.conv_exp(x)
            xs, xb = x.split(self.split_sizes, dim=1)
        xb = self.blocks(xb)
        if self.fusion != "first":
            xb = self.conv_transition_b(xb)
        out = torch.cat([xs, xb], dim=1)
        return out if self.fusion == "last" else self.conv_transition(out)

    # ---- deployed form (detector.models.deploy): the stage on piece lists, no slicing

    def input_cuts(self, out_cuts: Iterable[int]) -> set:
        """Piece boundaries this stage wants in its input so that it never slices: with
        ``split='slice'`` (and a per-channel down layer), the bypass part's edges."""
        if self.split_mode != "slice" or channelwise(self.conv_down) is None:
            return set()
        bypass = self.split_sizes[0]
        cuts = {bypass}
        if self.fusion == "last":
            cuts |= {c for c in out_cuts if 0 < c < bypass}
        return cuts

    def piece_form(self, out_cuts: Iterable[int], align: bool = True) -> "PieceStage":
        """This stage (BatchNorm folded) from a piece list to pieces cut at ``out_cuts``."""
        return PieceStage(self, out_cuts, align)


class PieceStage(nn.Module):
    """The deployed form of a :class:`CSPStage`: piece lists in and out, the split folded into
    the convs that produce each part, so the graph slices only where a piece boundary is not
    where the split needs it (see :mod:`detector.models.deploy`)."""

    def __init__(self, stage: CSPStage, out_cuts: Iterable[int], align: bool = True):
        super().__init__()
        out_cuts = sorted(set(out_cuts))
        self.fusion, self.split_mode = stage.fusion, stage.split_mode
        self.bypass, self.block_in = stage.split_sizes
        self.blocks = convert_units(copy.deepcopy(stage.blocks))
        if align:
            align_blocks(self.blocks)
        down = channelwise(stage.conv_down)
        self.down_per_piece = down is not None
        self.down = down if self.down_per_piece else as_conv_act(stage.conv_down)
        bypass_cuts = [c for c in out_cuts if 0 < c < self.bypass] if self.fusion == "last" else []
        self.part1, self.part2 = self._parts(stage, bypass_cuts)
        self.transition_b = self.transition = None
        if self.fusion != "first":
            cuts = [c - self.bypass for c in out_cuts if c > self.bypass] if self.fusion == "last" else []
            self.transition_b = nn.ModuleList(split_rows(as_conv_act(stage.conv_transition_b), cuts))
        if self.fusion != "last":
            self.transition = nn.ModuleList(split_rows(as_conv_act(stage.conv_transition), out_cuts))

    def _parts(self, stage: CSPStage, bypass_cuts: list):
        """The convs computing the bypass part (split at ``bypass_cuts``) and the block part;
        (None, None) where the parts are pieces of the input already."""
        if self.split_mode == "slice" and not self.down_per_piece:
            # the down conv's rows are the two parts
            parts = split_rows(self.down, [self.bypass] + bypass_cuts)
            self.down = None
        elif self.split_mode == "conv":
            parts = split_rows(as_conv_act(stage.conv_exp), [self.bypass] + bypass_cuts)
        elif self.split_mode == "two_conv":
            return (nn.ModuleList(split_rows(as_conv_act(stage.conv_part1), bypass_cuts)),
                    as_conv_act(stage.conv_part2))
        else:
            return None, None
        return nn.ModuleList(parts[:-1]), parts[-1]

    def forward(self, pieces: Pieces) -> Pieces:
        if self.down_per_piece:
            pieces = [self.down(p) for p in pieces]
        if self.split_mode == "slice" and self.part2 is None:
            xs, xb = take(pieces, 0, self.bypass), cat(take(pieces, self.bypass, self.bypass + self.block_in))
        else:
            x = cat(pieces) if self.down is None or self.down_per_piece else self.down(cat(pieces))
            xs, xb = [p(x) for p in self.part1], self.part2(x)
        xb = self.blocks(xb)
        tb = [t(xb) for t in self.transition_b] if self.fusion != "first" else [xb]
        if self.fusion == "last":
            return list(xs) + tb
        y = cat(list(xs) + tb)
        return [t(y) for t in self.transition]


class PlainStage(nn.Module):
    """A stage without the CSP split (the baselines): down -> blocks [-> 1x1 transition].

    ``down='block'`` puts the stride in the first block (ResNet); ``'conv'`` is Darknet's 3x3 s2
    conv (timm's ``DarkStage``); ``'avgpool'`` is DenseNet/PeleeNet's pooling between stages.
    ``transition=True`` adds DenseNet's 1x1 transition conv to ``out_channels`` at the end.
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int,
                 block: BlockSpec = "bottleneck", stride: int = 2, *, down: str = "block", down_kernel: int = 3,
                 down_channels: Optional[int] = None, down_groups: int = 1, transition: bool = False,
                 block_ratio: Optional[float] = None, norm=nn.BatchNorm2d, act=nn.ReLU, **block_options):
        super().__init__()
        block_cls = get_block(block)
        down_mod, c = make_down(down, in_channels, down_channels or out_channels, stride,
                                down_kernel, norm, act, down_groups)
        if down_mod is not None:
            self.conv_down = down_mod
        first_stride = stride if down == "block" else 1
        block_out = out_channels if block_ratio is None else int(round(out_channels * block_ratio))
        self.blocks = nn.Sequential()
        for i in range(depth):
            blk = make_block(block_cls, c, block_out, first_stride if i == 0 else 1, norm=norm,
                             act=act, **block_options)
            self.blocks.add_module(str(i), blk)
            c = block_out_channels(blk, block_out)
        if transition:
            self.conv_transition = ConvNormAct(c, out_channels, 1, 1, 1, norm, act)
            c = out_channels
        if c != out_channels:
            raise ValueError(f"stage ends with {c} channels but out_channels is {out_channels}; "
                             "set transition: true or fix the widths")
        self.out_channels = out_channels

    def forward(self, x):
        if hasattr(self, "conv_down"):
            x = self.conv_down(x)
        x = self.blocks(x)
        if hasattr(self, "conv_transition"):
            x = self.conv_transition(x)
        return x

    def output_unit(self) -> Optional[str]:
        """The unit whose output is the stage's, if a conv (its rows split in the deployed form)."""
        return "conv_transition" if hasattr(self, "conv_transition") else None


__all__ = ["ConvNormAct", "ResNetBasicBlock", "ResNetBottleneck", "ResNeXtBottleneck", "DarkBlock",
           "DarknetBottleneck", "DenseLayer", "TwoWayDenseLayer", "PeleeStem", "CSPStage",
           "PieceStage", "PlainStage", "BLOCKS", "get_block", "make_block", "get_act", "get_norm",
           "check_channels"]
