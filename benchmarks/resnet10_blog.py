#!/usr/bin/env python
"""ResNet10 vs CSPResNet10 with a 400-class head at 128x128: the reference blog's comparison.

The blog built a ResNet10 (basic blocks [1, 1, 1, 1], widths 64/128/256/512, a 7x7 stride-1 stem
conv and a 3x3 stride-2 max-pool) and a CSPResNet10 of timm-style CSP stages (conv_down = 2x2
avg-pool then 3x3 conv, conv_exp 1x1, split in halves, blocks on one half, conv_transition_b,
conv_transition), and reported 5,111,888 vs 4,121,616 parameters and the CSP model about 12%
faster on a laptop CPU (batch 2: 213 vs 186 ms).

This script measures four models: our configs/backbones/resnet10.yaml and cspresnet10.yaml
(the CSPNet paper's darknet-style layout) and the blog's two layouts, built from our blocks
through backbone configs. Two details of the blog's layout are not config options, so the
builder below sets them on the built model (same weights, same parameter count):

- the 7x7 stem conv at stride 1: a backbone config must reach stride 32 (a detector needs the
  stride-8/16/32 features), so the model is built with a stride-2 stem conv whose stride is then
  set to 1 (padding is 3 either way);
- conv_down as 2x2 avg-pool then a stride-1 3x3 conv: built as our stride-2 3x3 ``conv_down``
  (same parameters and multiply-adds), which is then preceded by the pool and set to stride 1.

Timing: batch 1 and 2, PyTorch eager (eval, no grad) and ONNX Runtime (the graph exported with
torch.onnx), ``--threads`` threads per engine (ORT sessions share one pool: with a pool per
session, an idle pool spins and slows the next model). Models run in alternating blocks, each
block the median of ``--iters`` runs; ``--repeats`` rounds; the ratio CSP / ResNet is taken
within each round, and its median and min-max over rounds are printed.

    python benchmarks/resnet10_blog.py                # about 2-4 min on 2 shared cores
    python benchmarks/resnet10_blog.py --repeats 3 --iters 5 --no-ort   # quick look
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from detector import build_model  # noqa: E402
from detector.common import cpu_name  # noqa: E402
from detector.models.info import count_params, measure  # noqa: E402

BLOG_PARAMS = {"blog ResNet10": 5_111_888, "blog CSPResNet10": 4_121_616}
NUM_CLASSES, IMG = 400, 128

# the blog's layouts as backbone configs (stride-2 stem conv and stride-2 3x3 conv_down here;
# blog_layout() below turns them into the blog's stride-1 stem conv and avg-pool + 3x3 conv)
_BLOG_STEM = {"type": "conv", "channels": [64], "kernel_size": 7, "stride": 2, "pool": "max",
              "pool_kernel": 3}
BLOG_RESNET10 = {
    "arch": "cspnet", "name": "blog_resnet10", "num_classes": NUM_CLASSES, "act": "relu",
    "stem": _BLOG_STEM,
    "stage_defaults": {"csp": False, "block": "basic", "down": "block", "stride": 2,
                       "shortcut": "projection"},
    "stages": [{"depth": 1, "out_channels": 64, "stride": 1}, {"depth": 1, "out_channels": 128},
               {"depth": 1, "out_channels": 256}, {"depth": 1, "out_channels": 512}],
}
BLOG_CSPRESNET10 = {
    "arch": "cspnet", "name": "blog_cspresnet10", "num_classes": NUM_CLASSES, "act": "relu",
    "stem": _BLOG_STEM,
    "stage_defaults": {"csp": True, "block": "basic", "down": "conv", "down_kernel": 3,
                       "stride": 2, "split": "conv", "split_ratio": 0.5, "fusion": "both",
                       "expand_ratio": 1.0, "shortcut": "projection"},
    "stages": [{"depth": 1, "out_channels": 64, "stride": 1, "down": "none"},
               {"depth": 1, "out_channels": 128, "down_channels": 128},
               {"depth": 1, "out_channels": 256, "down_channels": 256},
               {"depth": 1, "out_channels": 512, "down_channels": 512}],
}


def blog_layout(model: nn.Module) -> nn.Module:
    """Stride-1 stem conv; every strided ``conv_down`` becomes 2x2 avg-pool -> stride-1 conv."""
    stem_conv = model.stem.conv1.conv
    stem_conv.stride = (1, 1)
    for stage in model.stages:
        down = getattr(stage, "conv_down", None)
        conv = getattr(down, "conv", None)
        if isinstance(conv, nn.Conv2d) and conv.stride == (2, 2):
            conv.stride = (1, 1)
            stage.conv_down = nn.Sequential(nn.AvgPool2d(2, 2), down)
    return model


def build_models():
    models = {
        "ours resnet10": build_model({"model": {"arch": "resnet10", "num_classes": NUM_CLASSES}}),
        "ours cspresnet10": build_model({"model": {"arch": "cspresnet10", "num_classes": NUM_CLASSES}}),
        "blog ResNet10": blog_layout(build_model({"model": BLOG_RESNET10})),
        "blog CSPResNet10": blog_layout(build_model({"model": BLOG_CSPRESNET10})),
    }
    return {k: m.eval() for k, m in models.items()}


def export(model: nn.Module, path: Path, batch: int) -> Path:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(batch, 3, IMG, IMG),), str(path), dynamo=False,
                          opset_version=17, input_names=["images"], output_names=["logits"],
                          do_constant_folding=True)
    return path


def time_block(fn, iters: int) -> float:
    """Median wall time of ``iters`` calls, in ms."""
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def alternate(runners, repeats: int, iters: int, warmup: int):
    """{name: [ms per round]}: every round times every runner once, in turn."""
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    out = {k: [] for k in runners}
    for r in range(repeats):
        names = list(runners) if r % 2 == 0 else list(reversed(list(runners)))  # no order bias
        for k in names:
            out[k].append(time_block(runners[k], iters))
    return out


def spread(xs):
    return f"{statistics.median(xs):8.2f} [{min(xs):.2f}-{max(xs):.2f}]"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="threads per engine")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-ort", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    import onnxruntime as ort
    print(f"torch {torch.__version__} | onnxruntime {ort.__version__} | {platform.processor() or platform.machine()} "
          f"| {cpu_name()} | {os.cpu_count()} cores | load average {os.getloadavg()[0]:.2f} "
          f"| {args.threads} thread(s) per engine")
    models = build_models()

    print(f"\n{NUM_CLASSES}-class head, input {IMG}x{IMG}; GFLOPs = 2 x multiply-adds, batch 1")
    print(f"{'model':<18} {'params':>11} {'blog params':>12} {'GFLOPs':>7}")
    for name, m in models.items():
        flops, _, shapes = measure(m, IMG)
        assert shapes[0] == (1, NUM_CLASSES), shapes
        blog = BLOG_PARAMS.get(name)
        print(f"{name:<18} {count_params(m):>11,} {f'{blog:,}' if blog else '-':>12} {flops / 1e9:7.3f}")

    if not args.no_ort:
        from detector.export.onnx_runtime import make_session, use_global_thread_pool
        use_global_thread_pool(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="resnet10_blog-"))
    for batch in args.batches:
        x = torch.rand(batch, 3, IMG, IMG)
        runners = {}
        for name, m in models.items():
            runners[f"torch {name}"] = (lambda m=m: _torch_run(m, x))
        if not args.no_ort:
            xn = x.numpy()
            for name, m in models.items():
                path = export(m, tmp / f"{name.replace(' ', '_')}_b{batch}.onnx", batch)
                sess = make_session(path)
                with torch.no_grad():
                    ref = m(x).numpy()
                got = sess.run(None, {"images": xn})[0]
                assert np.abs(got - ref).max() < 1e-3 * max(1.0, np.abs(ref).max()), name
                runners[f"ort {name}"] = (lambda s=sess: s.run(None, {"images": xn}))
        times = alternate(runners, args.repeats, args.iters, args.warmup)
        print(f"\nbatch {batch}: ms per forward, median [min-max] of {args.repeats} rounds "
              f"(each the median of {args.iters} runs)")
        for k, v in times.items():
            print(f"  {k:<24} {spread(v)}")
        print(f"batch {batch}: CSP / ResNet time ratio per round, median [min-max] (< 1: CSP faster)")
        for engine in ("torch", "ort"):
            for pair in (("ours cspresnet10", "ours resnet10"), ("blog CSPResNet10", "blog ResNet10")):
                a, b = f"{engine} {pair[0]}", f"{engine} {pair[1]}"
                if a in times:
                    ratios = [ta / tb for ta, tb in zip(times[a], times[b])]
                    print(f"  {engine:<5} {pair[0]:<17} / {pair[1]:<14} {spread(ratios)}")
    print(f"\nafter: load average {os.getloadavg()[0]:.2f}")
    return 0


@torch.no_grad()
def _torch_run(m, x):
    return m(x)


if __name__ == "__main__":
    sys.exit(main())
