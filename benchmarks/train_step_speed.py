#!/usr/bin/env python
"""Training-step speed (forward + loss + backward + optimizer step) on random input: ours in
float32 and in bf16 autocast, against Ultralytics YOLO11n's own model and loss, in one run.

    python benchmarks/train_step_speed.py                                   # 320, batch 8, 2 threads
    python benchmarks/train_step_speed.py --size 416 --batch 8 --steps 12
    python benchmarks/train_step_speed.py --variants fp32 bf16 --no-peer    # ours only

Isolates the network's training cost from data loading (which ``benchmarks/head_to_head.py``
and ``benchmarks/data_pipeline.py`` include). The variants alternate step by step, so load
from other processes hits them all alike; each is the median of ``--steps`` timed steps after
2 warm-up steps, with the min-max, and the ratio to YOLO11n is taken per step.

Variants of ours: ``fp32``; ``bf16`` = ``torch.autocast("cpu", torch.bfloat16)`` around the
forward (what ``train.amp: bf16`` with ``train.cpu_amp: true`` does; native on CPUs with
AMX or AVX-512 BF16, emulated and slower elsewhere); ``cl`` and ``bf16-cl`` the same with
channels-last tensors; ``compile`` and ``bf16-compile`` the model under ``torch.compile``
(static shapes, what ``train.compile: true`` does; it compiles in the untimed warm-up steps).
YOLO11n: ``ultralytics.nn.tasks.DetectionModel("yolo11n.yaml")``
with its own ``v8DetectionLoss`` at its default gains, float32 (Ultralytics trains float32 on
a CPU).
"""
import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_VERBOSE", "False")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("fp32", "bf16", "cl", "bf16-cl", "compile", "bf16-compile")
# three boxes per image, xyxy pixels at 320 (scaled to --size)
BOXES = torch.tensor([[0, 50, 50, 120, 130], [2, 200, 30, 260, 90], [4, 10, 200, 90, 300]]).float()


def our_step(cfg_path: str, variant: str, size: int, batch: int):
    """A zero-argument callable: one optimizer step of ours in ``variant``."""
    from detector import build_model
    from detector.config import load_config
    from detector.models.loss import YOLOLoss

    cfg = load_config(cfg_path)
    cfg["model"]["num_classes"] = 5
    torch.manual_seed(0)
    model = build_model(cfg).train()
    channels_last = variant.endswith("cl")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = YOLOLoss(model)
    forward = torch.compile(model, dynamic=False) if variant.endswith("compile") else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
    x = torch.rand(batch, 3, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    boxes = BOXES.clone()
    boxes[:, 1:] *= size / 320
    targets = [boxes] * batch
    amp = variant.startswith("bf16")

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext():
            out = forward(x)
        loss, _ = loss_fn([o.float() for o in out], targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def yolo11n_step(size: int, batch: int):
    """A zero-argument callable: one optimizer step of YOLO11n with its own loss."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", nc=5, verbose=False).train()
    model.args = get_cfg()  # the default hyperparameters its loss reads (box, cls, dfl gains)
    for p in model.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
    x = torch.rand(batch, 3, size, size)
    xyxy = BOXES[:, 1:] / 320
    xywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
    n = len(BOXES)
    data = {"img": x, "batch_idx": torch.arange(batch).repeat_interleave(n).float(),
            "cls": BOXES[:, :1].repeat(batch, 1), "bboxes": xywh.repeat(batch, 1)}

    def step():
        loss = model.loss(data)[0]
        loss.sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", default="configs/csppelee_efm_sam.yaml")
    p.add_argument("--variants", nargs="+", default=["fp32", "bf16"], choices=VARIANTS)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--no-peer", action="store_true", help="ours only (no Ultralytics YOLO11n)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    runners = {f"ours {v}": our_step(args.cfg, v, args.size, args.batch) for v in args.variants}
    if not args.no_peer:
        runners["yolo11n fp32"] = yolo11n_step(args.size, args.batch)
    times = {k: [] for k in runners}
    for step in range(args.steps + 2):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run()
            if step >= 2:
                times[name].append(time.perf_counter() - t0)

    from detector.benchmark.machine import machine_line

    print(f"{machine_line(args.threads)}\n{Path(args.cfg).stem} vs YOLO11n, {args.size} px, batch {args.batch}, "
          f"{args.steps} timed steps each (alternating), random input, 3 boxes an image\n")
    ref = times.get("yolo11n fp32")
    print("| model | s/step (median, min-max) | images/s | images/s vs YOLO11n (per step, median, min-max) |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        med = statistics.median(ts)
        cell = "-"
        if ref and name != "yolo11n fp32":
            rs = [r / t for r, t in zip(ref, ts)]
            cell = f"{statistics.median(rs):.2f}x ({min(rs):.2f}-{max(rs):.2f})"
        print(f"| {name} | {med:.3f} ({min(ts):.3f}-{max(ts):.3f}) | {args.batch / med:.1f} | {cell} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
