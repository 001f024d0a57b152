"""Parameters, FLOPs and a per-stage table for any model ``detector.build_model`` returns.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add counts as 2, the
convention of the CSPNet paper's BFLOPs), measured on one forward pass at batch 1 in eval mode.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from ..common import Size, to_hw




def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _shapes(out) -> List[Tuple[int, ...]]:
    if isinstance(out, torch.Tensor):
        return [tuple(out.shape)]
    if isinstance(out, dict):
        out = list(out.values())
    shapes = []
    for o in out:
        shapes.extend(_shapes(o))
    return shapes


def measure(model: nn.Module, size: Size = 224, in_channels: int = None):
    """One eval forward at batch 1: (total FLOPs, FLOPs per module name, output shapes)."""
    h, w = to_hw(size)
    in_channels = in_channels or getattr(model, "in_channels", None) or 3
    device = next(iter(model.parameters()), torch.empty(0)).device
    x = torch.zeros(1, in_channels, h, w, device=device)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            out = model(x)
    finally:
        model.train(was_training)
    root = type(model).__name__
    per_module = {}
    for name, counts in counter.get_flop_counts().items():
        if name == root:
            per_module[""] = sum(counts.values())
        elif name.startswith(root + "."):
            per_module[name[len(root) + 1:]] = sum(counts.values())
    return counter.get_total_flops(), per_module, _shapes(out)


def _rows_for(model: nn.Module) -> List[Tuple[str, nn.Module, object, object]]:
    """(name, module, channels, stride) of the parts worth a table row."""
    rows = []
    if hasattr(model, "stages") and hasattr(model, "stem"):  # a backbone
        rows.append(("stem", model.stem, getattr(model, "stem_channels", "-"),
                     getattr(model, "stem_stride", "-")))
        for i, stage in enumerate(model.stages):
            rows.append((f"stages.{i}", stage, model.stage_channels[i], model.stage_strides[i]))
        for extra in ("conv_head", "head"):
            m = getattr(model, extra, None)
            if isinstance(m, nn.Module):
                rows.append((extra, m, getattr(getattr(m, "fc", None), "out_features", "-"), "-"))
        return rows
    for part in ("backbone", "neck", "head"):  # a detector
        sub = getattr(model, part, None)
        if not isinstance(sub, nn.Module):
            continue
        if part == "backbone" and hasattr(sub, "stages"):
            rows.extend((f"backbone.{n}", m, c, s) for n, m, c, s in _rows_for(sub))
        else:
            channels = _attr(sub, "out_channels", "channels", "feature_channels")
            strides = _attr(sub, "strides", "feature_strides")
            rows.append((part, sub, channels, strides))
    if not rows:
        rows = [(n, m, "-", "-") for n, m in model.named_children()]
    return rows


def _attr(module, *names):
    for n in names:
        v = getattr(module, n, None)
        if isinstance(v, (int, list, tuple)):
            return list(v) if isinstance(v, tuple) else v
    return "-"


def model_summary(model: nn.Module, size: Size = 224) -> Dict:
    """Params, GFLOPs, per-part rows and output shapes of ``model`` at input ``size``."""
    flops, per_module, shapes = measure(model, size)
    rows = []
    for name, module, channels, stride in _rows_for(model):
        rows.append(dict(name=name, channels=channels, stride=stride,
                         params=count_params(module), gflops=per_module.get(name, 0) / 1e9))
    return dict(model=getattr(model, "name", type(model).__name__), size=to_hw(size),
                params=count_params(model), gflops=flops / 1e9, rows=rows, outputs=shapes)


def format_summary(s: Dict) -> str:
    """The summary as a fixed-width text table."""
    h, w = s["size"]
    lines = [f"{s['model']} @ {h}x{w}: {s['params']:,} params ({s['params'] / 1e6:.3f} M), "
             f"{s['gflops']:.3f} GFLOPs",
             f"{'part':<24}{'channels':>22}{'stride':>14}{'params':>14}{'GFLOPs':>10}"]
    for r in s["rows"]:
        lines.append(f"{r['name']:<24}{str(r['channels']):>22}{str(r['stride']):>14}"
                     f"{r['params']:>14,}{r['gflops']:>10.3f}")
    lines.append("outputs: " + ", ".join(str(list(shape)) for shape in s["outputs"]))
    return "\n".join(lines)


__all__ = ["count_params", "measure", "model_summary", "format_summary"]
