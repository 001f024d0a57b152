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
* **Maxout without the slice or ``Max``** (:class:`~.layers.MaxoutConv`): two convolutions
  (one per half) and ``max(a, b) = a + relu(b - a)`` from blocked ops.
* **Aligned widths**: a dense layer's bottleneck narrower than a block (8 channels in
  CSPPeleeNet's first stage) gets zero channels up to 16; zero weights, zero bias and an
  activation with ``act(0) = 0`` leave every output unchanged.

OpenCV DNN runs the rewritten graph as well (only Conv, Concat, Add, Relu, pooling, Resize,
Mul, Sigmoid). The rewrite needs BatchNorm folded first (``Detector.fuse`` does both).

Each deployed form lives on the module it replaces (timm's manner); this module holds the
generic parts and the walk (:func:`reparameterize`) that finds them:

* a module with a ``reparameterize(align)`` method is replaced by what it returns (a backbone
  by its piece-list form, ``DeployBackbone``; the neck's ``Resample`` puts a
  :class:`~.layers.MaxoutConv` in place of its conv + Maxout); torch's ceil-mode average pools
  become :class:`EvenAvgPool`; any other module is walked into;
* inside a backbone a stage with ``input_cuts`` / ``piece_form`` (``CSPStage``) builds its
  own piece-list form; any other stage or stem runs whole (:class:`PieceModule`), the unit
  named by its ``output_unit()`` (or a ``Sequential``'s last conv) split by rows at the cuts;
* a block with ``align_widths()`` pads its own bottlenecks (:func:`pad_pair`).
"""
from __future__ import annotations

import copy
from typing import Iterable, List, Optional, Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

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
    Only for a plain (groups=1) pair of BN-folded units where ``first`` feeds ``second`` alone;
    returns whether it padded.
    """
    if not (isinstance(first, ConvAct) and isinstance(second, ConvAct)):
        return False
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
    stride-k conv of weight 1/k^2 (the same average). ORT has no blocked kernel for the
    ceil-mode pool; the conv runs blocked in float32 (as fast as the floor-mode pool) and as an
    int8 conv in a quantized graph, 17% faster than ORT's int8 average pool on the flagship.
    Odd maps keep the pool."""

    def __init__(self, pool: nn.AvgPool2d):
        super().__init__()
        self.pool = pool
        k = pool.kernel_size
        self.k = k if isinstance(k, int) else k[0]

    def forward(self, x):
        if x.shape[-2] % self.k or x.shape[-1] % self.k:
            return self.pool(x)
        c = int(x.shape[1])  # fixed by the graph: a constant kernel, also in dynamic exports
        w = torch.full((c, 1, self.k, self.k), 1.0 / (self.k * self.k), dtype=x.dtype, device=x.device)
        return torch.nn.functional.conv2d(x, w, stride=self.k, groups=c)


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


# ----------------------------------------------------------------------------- module forms

def even_pools(module: nn.Module) -> nn.Module:
    """Every ``AvgPool2d(k, k, ceil_mode=True)`` inside ``module`` -> :class:`EvenAvgPool`."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AvgPool2d) and isinstance(channelwise(child), EvenAvgPool):
                setattr(parent, name, channelwise(child))
    return module


def convert_units(module: nn.Module) -> nn.Module:
    """Replace every conv-norm-act inside ``module`` by a :class:`ConvAct` (in place)."""
    for name, child in list(module.named_children()):
        if is_conv_norm_act(child):
            setattr(module, name, as_conv_act(child))
        else:
            convert_units(child)
    return module


def align_blocks(module: nn.Module) -> None:
    """Let every block inside ``module`` pad its bottleneck widths (its ``align_widths()``)."""
    for m in module.modules():
        if callable(getattr(m, "align_widths", None)):
            m.align_widths()


def input_cuts(stage: nn.Module, out_cuts: Iterable[int]) -> set:
    """Piece boundaries ``stage`` wants in its input so that it never slices (its own
    ``input_cuts``; none for a stage that takes its input whole)."""
    own = getattr(stage, "input_cuts", None)
    return set(own(out_cuts)) if callable(own) else set()


def piece_form(module: nn.Module, out_cuts: Iterable[int], align: bool = True) -> nn.Module:
    """``module`` (a stem or stage) as a module from a piece list to a piece list cut at
    ``out_cuts``: its own ``piece_form`` (CSP stages) or :class:`PieceModule`."""
    own = getattr(module, "piece_form", None)
    return own(out_cuts, align) if callable(own) else PieceModule(module, out_cuts, align)


class PieceModule(nn.Module):
    """Any stage without a piece form of its own (plain stages, stems): the whole map in,
    pieces out.

    When the last unit is a conv-norm-act (named by the module's ``output_unit()``, e.g. a
    transition or the Pelee stem's fuse conv, or a ``Sequential``'s last conv) its rows are
    split at the cuts; otherwise the output is sliced (correct, slower).
    """

    def __init__(self, module: nn.Module, out_cuts: Iterable[int], align: bool = True):
        super().__init__()
        self.cuts = sorted(set(out_cuts))
        body = even_pools(convert_units(copy.deepcopy(module)))
        if align:
            align_blocks(body)
        self.body, self.last = body, None
        last_name = _output_unit_name(body) if self.cuts else None
        if last_name is not None:
            # run the body with its last unit removed, then the row-split unit
            parent, attr, unit = _resolve(body, last_name)
            setattr(parent, attr, nn.Identity())
            self.last = nn.ModuleList(split_rows(unit, self.cuts))

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


def _output_unit_name(body: nn.Module) -> Optional[str]:
    """Name of the unit whose output is the module's output, if that is a :class:`ConvAct`."""
    own = getattr(body, "output_unit", None)
    if callable(own):
        name = own()
    elif isinstance(body, nn.Sequential) and len(body):
        name = list(body._modules)[-1]
    else:
        return None
    return name if name is not None and isinstance(_resolve(body, name)[2], ConvAct) else None


# ----------------------------------------------------------------------------- the walk

def reparameterize(model: nn.Module, align: bool = True) -> nn.Module:
    """The deployed form of ``model`` (a detector, a backbone classifier, any module holding
    them), rewritten in place where possible; returns the model to use. Switches to eval mode
    and folds BatchNorm first. ``align`` pads narrow bottlenecks to the NCHWc block."""
    model.eval()
    fold_batchnorm(model)
    return _walk(model, align)


def _walk(module: nn.Module, align: bool) -> nn.Module:
    own = getattr(module, "reparameterize", None)
    if callable(own):
        return own(align)
    if isinstance(module, nn.AvgPool2d):
        return channelwise(module)
    for name, child in list(module.named_children()):
        new = _walk(child, align)
        if new is not child:
            setattr(module, name, new)
    return module


__all__ = ["reparameterize", "fold_batchnorm", "ConvAct", "EvenAvgPool", "PieceModule",
           "as_conv_act", "split_rows", "pad_pair", "piece_form", "input_cuts"]
