"""The layers every model part is built from: conv-norm-act, activation and norm lookup,
Maxout, SAM and the two SPP forms.

Backbones, necks and heads all take their layers from here, so an activation name means the
same thing everywhere (:class:`MaxoutConv` is Maxout's deployed form, see
:mod:`detector.models.deploy`):

* an activation is a name (``relu``, ``leaky_relu``, ``silu``/``swish``, ``mish``, ``gelu``,
  ``hardswish``, ``relu6``, ``identity``), a class or callable returning a module, ``None``
  (identity), or a mapping ``{name: leaky_relu, negative_slope: 0.1}`` for an activation with
  options. ``leaky_relu`` is PyTorch's ``nn.LeakyReLU``, slope 0.01 (timm's default); darknet's
  ``leaky`` (slope 0.1, the authors' CSP and YOLO models) is written out:
  ``act: {name: leaky_relu, negative_slope: 0.1}``.
* a norm is a name (``batchnorm``, ``syncbatchnorm``, ``identity``), a class taking
  ``num_features``, or ``None``.

Submodule names (``conv``/``bn``/``act`` of a conv-norm-act; ``conv``/``bn`` of SAM;
``squeeze``/``expand`` of the squeeze SPP) are state-dict keys: they stay fixed so checkpoints
and timm weights keep loading and :meth:`Detector.fuse` finds every ``conv`` + ``bn`` pair.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from ..config import ConfigError, closest_key
from .deploy import ConvAct, split_rows

LayerSpec = Union[str, Mapping[str, Any], Callable[..., nn.Module], None]

# ----------------------------------------------------------------------------- lookup

ACTIVATIONS = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": nn.LeakyReLU,   # slope 0.01 unless negative_slope says otherwise
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
    "hardswish": nn.Hardswish,
    "gelu": nn.GELU,
    "identity": nn.Identity,
}
# options an activation mapping may carry, per name (anything else is a config error)
ACT_OPTIONS = {"leaky_relu": ("negative_slope",), "gelu": ("approximate",)}

NORMS = {
    "batchnorm": nn.BatchNorm2d,
    "syncbatchnorm": nn.SyncBatchNorm,
    "identity": nn.Identity,
}


def _lookup(name: str, table: dict, kind: str, where: str = ""):
    """A layer class by its config name, or an error naming the closest known one."""
    if not isinstance(name, str):
        raise ConfigError(f"{where or kind}: expected a {kind} name, got {name!r}")
    key = name.lower()
    if key not in table:
        raise ConfigError(f"{where + ': ' if where else ''}unknown {kind} '{name}'"
                          f"{closest_key(key, table)}; known: {', '.join(sorted(table))}")
    return table[key]


def get_act(act: LayerSpec, negative_slope: Optional[float] = None,
            where: str = "act") -> Callable[..., nn.Module]:
    """Activation factory (call it, optionally with ``inplace=``) from a config spec.

    ``act``: a name, a ``{name: ..., <option>: ...}`` mapping, a class / callable, or ``None``.
    ``negative_slope`` (the backbones' ``act_slope`` key) applies to ``leaky_relu`` only; it
    must agree with a slope given in the mapping. ``where`` names the config key in errors.
    """
    options = {}
    if isinstance(act, Mapping):
        if "name" not in act:
            raise ConfigError(f"{where}: an activation mapping needs a 'name' "
                              f"(e.g. {{name: leaky_relu, negative_slope: 0.1}}), got {dict(act)}")
        name = act["name"]
        cls = _lookup(name, ACTIVATIONS, "activation", where)
        allowed = ACT_OPTIONS.get(str(name).lower(), ())
        for key, value in act.items():
            if key == "name":
                continue
            if key not in allowed:
                raise ConfigError(f"{where}.{key}: '{name}' takes no option '{key}'"
                                  f"{closest_key(key, allowed)}"
                                  + (f"; its options: {', '.join(allowed)}" if allowed else ""))
            options[key] = value
    elif act is None:
        cls = nn.Identity
    elif isinstance(act, str):
        cls = _lookup(act, ACTIVATIONS, "activation", where)
    elif callable(act):
        cls = act
    else:
        raise ConfigError(f"{where}: expected an activation name, mapping or class, got {act!r}")

    if negative_slope is not None:
        if cls is not nn.LeakyReLU:
            raise ConfigError(f"{where}: a negative slope ({negative_slope}) applies to "
                              f"leaky_relu only, not '{getattr(cls, '__name__', cls)}'")
        given = options.get("negative_slope")
        if given is not None and float(given) != float(negative_slope):
            raise ConfigError(f"{where}: two different leaky_relu slopes ({given} in the "
                              f"mapping, {negative_slope} in act_slope); give one")
        options["negative_slope"] = negative_slope
    if "negative_slope" in options:
        try:
            options["negative_slope"] = float(options["negative_slope"])
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.negative_slope must be a number, got "
                              f"{options['negative_slope']!r}") from None
    return functools.partial(cls, **options) if options else cls


def make_act(act: LayerSpec, negative_slope: Optional[float] = None, inplace: bool = False,
             where: str = "act") -> nn.Module:
    """An activation module from a spec (see :func:`get_act`); ``inplace`` where supported."""
    factory = get_act(act, negative_slope, where)
    if inplace and _accepts(factory, "inplace"):
        return factory(inplace=True)
    return factory()


def _accepts(factory, arg: str) -> bool:
    target = factory.func if isinstance(factory, functools.partial) else factory
    try:
        return arg in inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def get_norm(norm: LayerSpec, where: str = "norm") -> Callable[[int], nn.Module]:
    """Norm factory from a name (``'batchnorm'``), a class taking ``num_features``, or ``None``."""
    if norm is None:
        return lambda channels: nn.Identity()
    if isinstance(norm, str):
        norm = _lookup(norm, NORMS, "norm", where)
    if norm is nn.Identity:
        return lambda channels: nn.Identity()
    if not callable(norm):
        raise ConfigError(f"{where}: expected a norm name or class, got {norm!r}")
    return norm


def same_padding(kernel_size: int, stride: int = 1, dilation: int = 1) -> int:
    """timm's symmetric padding: ``out = ceil(in / stride)`` for odd kernels (and 2x2 s2)."""
    return ((stride - 1) + dilation * (kernel_size - 1)) // 2


# ----------------------------------------------------------------------------- layers

class ConvNormAct(nn.Sequential):
    """Conv2d (no bias) -> norm -> activation, as submodules ``conv``, ``bn``, ``act``.

    A ``Sequential`` so that it runs as one call chain; the fixed names let ``fuse()`` fold
    ``bn`` into ``conv`` and keep timm's state-dict keys (``...conv.weight``, ``...bn.weight``).
    The activation runs in place when it can (it only ever sees the norm's fresh output).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, norm: LayerSpec = nn.BatchNorm2d, act: LayerSpec = nn.ReLU,
                 apply_act: bool = True, *, negative_slope: Optional[float] = None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              padding=same_padding(kernel_size, stride), groups=groups, bias=False)
        self.bn = get_norm(norm)(out_channels)
        self.act = make_act(act, negative_slope, inplace=True) if apply_act else nn.Identity()
        self.in_channels, self.out_channels = in_channels, out_channels


class Maxout(nn.Module):
    """Cross-channel max pooling (darknet's ``maxpool_depth``): ``out[c] = max(x[c], x[c+C/2])``.

    Halves the channels of one tensor, so the concatenation that follows holds half the memory
    (the EFM's feature-pyramid compression, docs/paper.md).
    """

    def forward(self, x):
        c = x.shape[1]
        if c % 2:
            raise ValueError(f"Maxout needs an even number of channels, got {c}")
        a, b = torch.split(x, c // 2, dim=1)
        return torch.maximum(a, b)


class MaxoutConv(nn.Module):
    """The deployed form of a conv-norm-act to 2C channels + :class:`Maxout`: no slice, no ``Max``.

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


class SAM(nn.Module):
    """Point-wise spatial attention (YOLOv4's modified SAM): ``y = x * sigmoid(BN(conv1x1(x)))``.

    No channel pooling: the attention map has the full C x H x W shape, so it costs one 1x1 conv.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return x * torch.sigmoid(self.bn(self.conv(x)))


def _check_kernels(kernels: Sequence[int]) -> tuple:
    kernels = tuple(int(k) for k in kernels)
    if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
        raise ConfigError(f"spp_kernels must be odd sizes >= 1 (stride-1 pools keep the map "
                          f"size only for odd kernels), got {list(kernels)}")
    return kernels


class SPP(nn.Module):
    """Darknet's SPP (yolov3-spp.cfg / yolov4.cfg): parameter-free.

    Stride-1 max-pools (5, 9, 13) of the input, concatenated with the input:
    ``C -> (len(kernels) + 1) * C`` channels; the next layer (a 1x1 conv) fuses them.
    """

    def __init__(self, channels: int, kernels: Sequence[int] = (5, 9, 13)):
        super().__init__()
        kernels = _check_kernels(kernels)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.in_channels = channels
        self.out_channels = channels * (len(kernels) + 1)

    def forward(self, x):
        return torch.cat([x] + [p(x) for p in self.pools], 1)


class SqueezeSPP(nn.Module):
    """YOLOv5's SPP form: 1x1 squeeze to ``C/2``, the stride-1 max-pools, concat, 1x1 to ``out``.

    Same receptive field as :class:`SPP`, with two convs of its own around the pools.
    """

    def __init__(self, in_channels: int, out_channels: int, kernels: Sequence[int] = (5, 9, 13),
                 act: LayerSpec = "relu"):
        super().__init__()
        kernels = _check_kernels(kernels)
        hidden = in_channels // 2
        self.squeeze = ConvNormAct(in_channels, hidden, 1, act=act)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.expand = ConvNormAct(hidden * (len(kernels) + 1), out_channels, 1, act=act)
        self.in_channels, self.out_channels = in_channels, out_channels

    def forward(self, x):
        x = self.squeeze(x)
        return self.expand(torch.cat([x] + [p(x) for p in self.pools], 1))


def check_channels(x: torch.Tensor, expected: int, what: str = "input") -> None:
    """Raise a ValueError naming expected vs got when ``x`` is not (B, expected, H, W).

    Skipped while tracing (ONNX export): the exported graph fixes the channels anyway."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    if x.dim() != 4 or x.shape[1] != expected:
        got = tuple(x.shape)
        raise ValueError(f"{what} must be (B, {expected}, H, W), got shape {got}"
                         + (f" ({x.shape[1]} channels, expected {expected})" if x.dim() == 4 else ""))


__all__ = ["ACTIVATIONS", "NORMS", "ConvNormAct", "Maxout", "MaxoutConv", "SAM", "SPP",
           "SqueezeSPP", "get_act", "make_act", "get_norm", "same_padding", "check_channels"]
