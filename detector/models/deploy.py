"""Deploy-time re-parameterisation: the same network, in the forms ONNX Runtime runs fastest.

Training keeps the modules (and checkpoints) as they are; :func:`reparameterize` rewrites a
BN-folded model so that its graph has no op that forces ONNX Runtime's CPU provider out of its
blocked channel layout (NCHWc: channels in blocks of 16 on AVX-512, 8 on AVX2). ORT's profiler
(``tools/benchmark.py --profile``) showed what did, on the flagship: the CSP channel split
(``Split`` has no blocked kernel: every dense layer behind it ran unblocked, ~99 reorder nodes),
2x2 average pools exported with ``ceil_mode=1`` (no blocked kernel: 9% of the time in 3 nodes),
the Maxout's ``Split`` and convolutions whose input width is not a multiple of the block.

The rewrites, each exact (outputs equal to float rounding; tests/test_deploy.py):

* **CSP split folded into the producers.** A stage's bypass and block parts are computed by
  separate convolutions -- the rows of the conv that produced the stage input (the stem's last
  conv, the previous stage's transition) or of the split conv -- so the graph never slices.
  Between stages a feature map travels as a list of *pieces* whose concatenation is the
  original map; channel-wise ops (pooling, activations) are applied per piece, and a piece
  list is concatenated only where a convolution needs the whole map (a block-aligned concat
  stays in the blocked layout).
* **Pooling kept blocked.** ``AvgPool2d(2, 2, ceil_mode=True)`` on an even-sized map is the
  same average as a depthwise 2x2 stride-2 conv of weight 1/4, which ORT runs blocked (and
  as an int8 conv after quantization); odd sizes (never the case for inputs that are
  multiples of 32) fall back to the original.
* **Maxout without the slice or ``Max``** (:class:`MaxoutConv`): two convolutions (one per half)
  and ``max(a, b) = a + relu(b - a)`` from blocked ops.
* **Aligned widths**: a dense layer's bottleneck narrower than a block (8 channels in
  CSPPeleeNet's first stage) gets zero channels up to 16; zero weights, zero bias and an
  activation with ``act(0) = 0`` leave every output unchanged.

OpenCV DNN runs the rewritten graph as well (only Conv, Concat, Add, Relu, pooling, Resize,
Mul, Sigmoid). The rewrite needs BatchNorm folded first (``Detector.fuse`` does both).
"""
from __future__ import annotations

import copy
from typing import Iterable, List, Optional, Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

POOL_AS_CONV = True  # even-size average pools as depthwise convs (see EvenAvgPool)
BLOCK = 16  # NCHWc block of ORT's CPU provider on AVX-512 (8 on AVX2: 16 is aligned for both)

Pieces = List[torch.Tensor]


# ----------------------------------------------------------------------------- conv helpers

def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a conv (a module with ``conv`` + ``bn``)."""
    for module in model.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
                and conv.out_channels == bn.num_features):
            module.conv = fuse_conv_bn_eval(conv, bn)
            module.bn = nn.Identity()
    return model


class ConvAct(nn.Module):
    """A BN-folded conv (with bias) followed by its activation: one fused node in ORT."""

    def __init__(self, conv: nn.Conv2d, act: Optional[nn.Module] = None):
        super().__init__()
        self.conv = conv
        self.act = act if act is not None else nn.Identity()

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x):
        return self.act(self.conv(x))


def is_conv_norm_act(m: nn.Module) -> bool:
    """A conv-norm-act unit (``conv``, ``bn``, ``act`` submodules run in that order)."""
    return (isinstance(getattr(m, "conv", None), nn.Conv2d) and hasattr(m, "bn")
            and hasattr(m, "act") and not isinstance(m, ConvAct))


def as_conv_act(m: nn.Module) -> ConvAct:
    """A conv-norm-act (BN folded here if it is not yet) as a :class:`ConvAct` (copied)."""
    if isinstance(m, ConvAct):
        return copy.deepcopy(m)
    conv, bn = copy.deepcopy(m.conv), m.bn
    if isinstance(bn, nn.BatchNorm2d):
        conv = fuse_conv_bn_eval(conv.eval(), bn.eval())
    elif not isinstance(bn, nn.Identity):
        raise TypeError(f"cannot fold a {type(bn).__name__} into its conv")
    return ConvAct(_with_bias(conv), _fresh_act(m.act))


def _fresh_act(act: nn.Module) -> nn.Module:
    # in place is safe: a ConvAct's activation only ever sees its own conv's fresh output
    return copy.deepcopy(act)


def _with_bias(conv: nn.Conv2d) -> nn.Conv2d:
    if conv.bias is None:
        conv.bias = nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype,
                                             device=conv.weight.device))
    return conv


def _sub_conv(conv: nn.Conv2d, rows: slice) -> nn.Conv2d:
    """The conv computing only output channels ``rows`` (group convs: whole groups only)."""
    w = conv.weight.data[rows]
    groups = conv.groups
    if groups > 1:
        per = conv.out_channels // groups
        if rows.start % per or rows.stop % per:
            raise ValueError("a grouped conv splits only at group boundaries")
        groups = (rows.stop - rows.start) // per
    new = nn.Conv2d(conv.in_channels * groups // conv.groups, w.shape[0], conv.kernel_size,
                    conv.stride, conv.padding, conv.dilation, groups, bias=True,
                    padding_mode=conv.padding_mode).to(w.device, w.dtype)
    new.weight.data.copy_(w)
    new.bias.data.copy_(conv.bias.data[rows] if conv.bias is not None else 0)
    return new


def split_rows(unit: ConvAct, cuts: Iterable[int]) -> List[ConvAct]:
    """Split a conv by output channels at ``cuts``: one :class:`ConvAct` per range."""
    c = unit.conv.out_channels
    edges = [0] + sorted({int(k) for k in cuts if 0 < k < c}) + [c]
    if len(edges) == 2:
        return [unit]
    return [ConvAct(_sub_conv(unit.conv, slice(a, b)), _fresh_act(unit.act))
            for a, b in zip(edges[:-1], edges[1:])]


def _zero_at_zero(act: nn.Module) -> bool:
    with torch.no_grad():
        return float(act(torch.zeros(1)).abs()) == 0.0


def pad_pair(first: ConvAct, second: ConvAct, multiple: int = BLOCK) -> bool:
    """Widen ``first``'s output (and ``second``'s input) with zero channels up to a multiple.

    Exact when ``act(0) == 0``: the extra channels are 0 and ``second`` gives them 0 weight.
    Only for a plain (groups=1) pair where ``first`` feeds ``second`` alone.
    """
    c = first.conv.out_channels
    target = -(-c // multiple) * multiple
    if (target == c or first.conv.groups != 1 or second.conv.groups != 1
            or not _zero_at_zero(first.act)):
        return False
    a, b = first.conv, second.conv
    wa = torch.zeros(target, *a.weight.shape[1:], dtype=a.weight.dtype, device=a.weight.device)
    wa[:c] = a.weight.data
    ba = torch.zeros(target, dtype=wa.dtype, device=wa.device)
    ba[:c] = a.bias.data if a.bias is not None else 0
    new_a = nn.Conv2d(a.in_channels, target, a.kernel_size, a.stride, a.padding, a.dilation,
                      bias=True).to(wa.device, wa.dtype)
    new_a.weight.data.copy_(wa)
    new_a.bias.data.copy_(ba)
    wb = torch.zeros(b.out_channels, target, *b.weight.shape[2:], dtype=b.weight.dtype,
                     device=b.weight.device)
    wb[:, :c] = b.weight.data
    new_b = nn.Conv2d(target, b.out_channels, b.kernel_size, b.stride, b.padding, b.dilation,
                      bias=True).to(wb.device, wb.dtype)
    new_b.weight.data.copy_(wb)
    new_b.bias.data.copy_(b.bias.data if b.bias is not None else torch.zeros(b.out_channels))
    first.conv, second.conv = new_a, new_b
    return True


# ----------------------------------------------------------------------------- pieces

def cat(pieces: Sequence[torch.Tensor]) -> torch.Tensor:
    return pieces[0] if len(pieces) == 1 else torch.cat(list(pieces), 1)


def take(pieces: Sequence[torch.Tensor], start: int, stop: int) -> Pieces:
    """The pieces covering channels ``[start, stop)``; a range that cuts a piece is sliced
    (correct, but the slice is what the planning below exists to avoid)."""
    out, pos = [], 0
    for p in pieces:
        c = p.shape[1]
        a, b = max(start, pos), min(stop, pos + c)
        if a < b:
            out.append(p if (a, b) == (pos, pos + c) else p[:, a - pos:b - pos])
        pos += c
    return out


class EvenAvgPool(nn.Module):
    """``AvgPool2d(k, k, ceil_mode=True)`` on a map that divides evenly, as a depthwise k x k
    stride-k conv of weight 1/k^2 (the same average; ``ceil_mode=False`` pooling with
    ``POOL_AS_CONV = False``). ORT has no blocked kernel for the ceil-mode pool; the conv runs
    blocked in float32 (as fast as the floor-mode pool) and as an int8 conv in a quantized
    graph, 17% faster than ORT's int8 average pool on the flagship. Odd maps keep the pool."""

    def __init__(self, pool: nn.AvgPool2d):
        super().__init__()
        self.pool = pool
        self.floor = nn.AvgPool2d(pool.kernel_size, pool.stride, pool.padding, ceil_mode=False,
                                  count_include_pad=pool.count_include_pad)
        k = pool.kernel_size
        self.k = k if isinstance(k, int) else k[0]

    def forward(self, x):
        if x.shape[-2] % self.k == 0 and x.shape[-1] % self.k == 0:
            if POOL_AS_CONV:
                c = int(x.shape[1])  # fixed by the graph: a constant kernel, also in dynamic exports
                w = torch.full((c, 1, self.k, self.k), 1.0 / (self.k * self.k), dtype=x.dtype, device=x.device)
                return torch.nn.functional.conv2d(x, w, stride=self.k, groups=c)
            return self.floor(x)
        return self.pool(x)


def channelwise(m: nn.Module) -> Optional[nn.Module]:
    """``m`` as a per-channel op that can run on each piece (None when it mixes channels)."""
    if isinstance(m, nn.Identity):
        return m
    if isinstance(m, nn.AvgPool2d):
        if m.ceil_mode and m.padding in (0, (0, 0)) and m.kernel_size == m.stride:
            return EvenAvgPool(m)
        return m
    if isinstance(m, (nn.MaxPool2d, nn.Upsample)):
        return m
    return None


# ----------------------------------------------------------------------------- stages

def _stage_kind(stage: nn.Module) -> str:
    if hasattr(stage, "split_sizes") and hasattr(stage, "fusion"):
        return "csp"
    return "plain" if hasattr(stage, "blocks") else "other"


def input_cuts(stage: nn.Module, out_cuts: Iterable[int]) -> set:
    """Piece boundaries this stage wants in its input so that it never slices."""
    if _stage_kind(stage) != "csp" or stage.split_mode != "slice":
        return set()
    if channelwise(stage.conv_down) is None:
        return set()
    bypass = stage.split_sizes[0]
    cuts = {bypass}
    if stage.fusion == "last":
        cuts |= {c for c in out_cuts if 0 < c < bypass}
    return cuts


def _pad_dense_blocks(blocks: nn.Sequential) -> None:
    """Align the bottleneck widths of two-way / plain dense layers (exact)."""
    for blk in blocks:
        pairs = [("branch1a", "branch1b"), ("branch2a", "branch2b"), ("conv1", "conv2")]
        for a, b in pairs:
            if isinstance(getattr(blk, a, None), ConvAct) and isinstance(getattr(blk, b, None), ConvAct):
                pad_pair(getattr(blk, a), getattr(blk, b))


def _even_pools(module: nn.Module) -> nn.Module:
    """Every ``AvgPool2d(k, k, ceil_mode=True)`` inside ``module`` -> :class:`EvenAvgPool`."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AvgPool2d) and isinstance(channelwise(child), EvenAvgPool):
                setattr(parent, name, channelwise(child))
    return module


def _convert_units(module: nn.Module) -> nn.Module:
    """Replace every conv-norm-act inside ``module`` by a :class:`ConvAct` (in place)."""
    for name, child in list(module.named_children()):
        if is_conv_norm_act(child):
            setattr(module, name, as_conv_act(child))
        else:
            _convert_units(child)
    return module


class PieceStage(nn.Module):
    """A CSP stage on piece lists: no slicing where the planning put piece boundaries."""

    def __init__(self, stage: nn.Module, out_cuts: Iterable[int], align: bool = True):
        super().__init__()
        out_cuts = sorted(set(out_cuts))
        self.fusion, self.split_mode = stage.fusion, stage.split_mode
        self.bypass, self.block_in = stage.split_sizes
        down = channelwise(stage.conv_down)
        self.down_per_piece = down is not None
        self.blocks = _convert_units(copy.deepcopy(stage.blocks))
        if align:
            _pad_dense_blocks(self.blocks)
        bypass_cuts = [c for c in out_cuts if 0 < c < self.bypass] if self.fusion == "last" else []
        self.part1 = self.part2 = None
        if self.down_per_piece:
            self.down = down
        else:
            self.down = as_conv_act(stage.conv_down)
        if self.split_mode == "slice" and not self.down_per_piece:
            # the down conv's rows are the two parts
            parts = split_rows(self.down, [self.bypass] + bypass_cuts)
            self.down = None
            self.part1, self.part2 = nn.ModuleList(parts[:-1]), parts[-1]
        elif self.split_mode == "conv":
            parts = split_rows(as_conv_act(stage.conv_exp), [self.bypass] + bypass_cuts)
            self.part1, self.part2 = nn.ModuleList(parts[:-1]), parts[-1]
        elif self.split_mode == "two_conv":
            self.part1 = nn.ModuleList(split_rows(as_conv_act(stage.conv_part1), bypass_cuts))
            self.part2 = as_conv_act(stage.conv_part2)
        self.transition_b = self.transition = None
        if self.fusion != "first":
            tb = as_conv_act(stage.conv_transition_b)
            cuts = [c - self.bypass for c in out_cuts if c > self.bypass] if self.fusion == "last" else []
            self.transition_b = nn.ModuleList(split_rows(tb, cuts))
        if self.fusion != "last":
            self.transition = nn.ModuleList(split_rows(as_conv_act(stage.conv_transition), out_cuts))

    def forward(self, pieces: Pieces) -> Pieces:
        if self.down_per_piece:
            pieces = [self.down(p) for p in pieces]
        if self.split_mode == "slice" and self.part2 is None:
            xs, xb = take(pieces, 0, self.bypass), cat(take(pieces, self.bypass, self.bypass + self.block_in))
        else:
            x = cat(pieces) if self.down is None or self.down_per_piece else self.down(cat(pieces))
            xs, xb = [p(x) for p in self.part1], self.part2(x)
        xb = self.blocks(xb)
        if self.fusion != "first":
            tb = [t(xb) for t in self.transition_b]
        else:
            tb = [xb]
        if self.fusion == "last":
            return list(xs) + tb
        y = cat(list(xs) + tb)
        return [t(y) for t in self.transition]


class PieceModule(nn.Module):
    """Any other stage (plain stages, stems): the whole map in, pieces out.

    When the last unit is a conv-norm-act (a transition, the Pelee stem's fuse conv, a conv
    stem) its rows are split at the cuts; otherwise the output is sliced (correct, slower).
    """

    def __init__(self, module: nn.Module, out_cuts: Iterable[int], align: bool = True):
        super().__init__()
        self.cuts = sorted(set(out_cuts))
        body = _even_pools(_convert_units(copy.deepcopy(module)))
        if align and hasattr(body, "blocks"):
            _pad_dense_blocks(body.blocks)
        self.body, self.last = body, None
        self.tail = nn.Identity()
        if not self.cuts:
            return
        last_name = _last_unit_name(body)
        if last_name is not None:
            parent, attr, unit = _resolve(body, last_name)
            # run the body with its last unit removed, then the row-split unit (+ what follows)
            setattr(parent, attr, nn.Identity())
            self.last = nn.ModuleList(split_rows(unit, self.cuts))
            self.tail_names = last_name

    def forward(self, x) -> Pieces:
        x = cat(x) if isinstance(x, (list, tuple)) else x
        y = self.body(x)
        if self.last is not None:
            return [u(y) for u in self.last]
        if not self.cuts:
            return [y]
        edges = [0] + self.cuts + [y.shape[1]]
        return [y[:, a:b] for a, b in zip(edges[:-1], edges[1:])]


def _resolve(root: nn.Module, dotted: str):
    parts = dotted.split(".")
    parent = root
    for p in parts[:-1]:
        parent = getattr(parent, p)
    return parent, parts[-1], getattr(parent, parts[-1])


def _last_unit_name(body: nn.Module) -> Optional[str]:
    """Name of the unit whose output is the module's output, if that is a :class:`ConvAct`.

    Known layouts: PeleeNet stem (``fuse``), conv stems (``convN``, no pool after), plain
    stages ending in ``conv_transition``."""
    if isinstance(getattr(body, "fuse", None), ConvAct) and hasattr(body, "branch_a"):
        return "fuse"
    if isinstance(getattr(body, "conv_transition", None), ConvAct):
        return "conv_transition"
    if isinstance(body, nn.Sequential) and len(body) and isinstance(body[-1], ConvAct):
        return list(body._modules)[-1]
    return None


class DeployBackbone(nn.Module):
    """A :class:`~detector.models.backbones.CSPBackbone`, re-parameterised for deployment.

    Same interface (``forward_features``, ``forward``, ``feature_channels``, ...), same
    outputs; the stem and stages pass piece lists between them (see the module docstring).
    """

    COPIED = ("config", "name", "in_channels", "num_classes", "stem_channels", "stem_stride",
              "stage_channels", "stage_strides", "feature_indices", "feature_channels",
              "feature_strides", "num_features")

    def __init__(self, backbone: nn.Module, align: bool = True):
        super().__init__()
        for key in self.COPIED:
            if hasattr(backbone, key):
                setattr(self, key, getattr(backbone, key))
        stages = list(backbone.stages)
        needs = [set() for _ in stages]
        stem_needs: set = set()
        for i in range(len(stages) - 1, -1, -1):
            cuts = input_cuts(stages[i], needs[i])
            if i > 0:
                needs[i - 1] |= cuts
            else:
                stem_needs |= cuts
        self.stem = PieceModule(backbone.stem, stem_needs, align)
        self.stages = nn.ModuleList(
            PieceStage(s, needs[i], align) if _stage_kind(s) == "csp" else PieceModule(s, needs[i], align)
            for i, s in enumerate(stages))
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


# ----------------------------------------------------------------------------- neck

class MaxoutConv(nn.Module):
    """conv-norm-act to 2C channels + Maxout, without a slice and without ``Max``.

    The two halves come from two C-channel convs (``a``, ``b``); ``max(a, b)`` is computed as
    ``a + relu(b - a)`` with ``-a`` from a depthwise 1x1 conv of weight -1. ORT has no blocked
    ``Max`` (each one cost two reorders, and left the fused map, its SAM and the head's first
    conv unblocked); conv + add + relu fuse into one blocked depthwise conv and one blocked add.
    """

    def __init__(self, unit: ConvAct):
        super().__init__()
        half = unit.conv.out_channels // 2
        self.a, self.b = split_rows(unit, [half])
        w = self.a.conv.weight
        self.neg = nn.Conv2d(half, half, 1, groups=half, bias=False).to(w.device, w.dtype)
        self.neg.weight.data.fill_(-1.0)

    def forward(self, x):
        a = self.a(x)
        return a + torch.relu(self.b(x) + self.neg(a))


def _is_maxout(m: nn.Module) -> bool:
    return type(m).__name__ == "Maxout"


def reparameterize_neck(neck: nn.Module) -> nn.Module:
    """Maxout after a conv -> :class:`MaxoutConv`; average pools -> blocked form (in place)."""
    for module in list(neck.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for i in range(len(names) - 1):
                unit, nxt = module._modules[names[i]], module._modules[names[i + 1]]
                if (is_conv_norm_act(unit) or isinstance(unit, ConvAct)) and _is_maxout(nxt) \
                        and unit.conv.out_channels % 2 == 0:
                    module._modules[names[i]] = MaxoutConv(as_conv_act(unit))
                    module._modules[names[i + 1]] = nn.Identity()
    return _even_pools(neck)


# ----------------------------------------------------------------------------- entry points

def reparameterize_backbone(backbone: nn.Module, align: bool = True) -> nn.Module:
    """A backbone (or classifier) with stem + stages -> :class:`DeployBackbone`; else as is."""
    if hasattr(backbone, "stages") and hasattr(backbone, "stem") and hasattr(backbone, "feature_indices"):
        fold_batchnorm(backbone.eval())
        return DeployBackbone(backbone, align).eval()
    return backbone


def reparameterize(model: nn.Module, align: bool = True) -> nn.Module:
    """Rewrite a detector (``backbone``/``neck``) or a backbone classifier in place where
    possible; returns the model to use. Switches to eval mode and folds BatchNorm first."""
    model.eval()
    fold_batchnorm(model)
    if hasattr(model, "backbone") and hasattr(model, "neck"):
        model.backbone = reparameterize_backbone(model.backbone, align)
        reparameterize_neck(model.neck)
        return model
    return reparameterize_backbone(model, align)


__all__ = ["reparameterize", "reparameterize_backbone", "reparameterize_neck", "fold_batchnorm",
           "DeployBackbone", "PieceStage", "ConvAct", "MaxoutConv", "split_rows", "pad_pair"]
