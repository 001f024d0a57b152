#!/usr/bin/env python
"""Training-step speed (forward + loss + backward + optimizer step) on random input.

    python benchmarks/train_step_speed.py --batch 4 8 16 --threads 1 2 --size 320

Isolates the model's training cost from data loading, to pick batch size and thread count
for CPU training. Batches alternate between settings so that load from other processes hits
every setting alike; the median of ``--steps`` timed steps is reported (after 2 warm-up steps).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cfg", default="configs/csppelee_efm_sam.yaml")
    p.add_argument("--batch", type=int, nargs="+", default=[8, 16])
    p.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    from detector import build_model
    from detector.config import load_config
    from detector.models.loss import YOLOLoss
    cfg = load_config(args.cfg)
    cfg["model"]["num_classes"] = 5
    model = build_model(cfg).train()
    loss_fn = YOLOLoss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    box = torch.tensor([[0, 50, 50, 120, 130], [2, 200, 30, 260, 90], [4, 10, 200, 90, 300]]).float()
    settings = [(b, t) for b in args.batch for t in args.threads]
    times = {s: [] for s in settings}
    for step in range(args.steps + 2):
        for b, t in settings:
            torch.set_num_threads(t)
            x = torch.rand(b, 3, args.size, args.size)
            t0 = time.perf_counter()
            loss, _ = loss_fn(model(x), [box] * b)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if step >= 2:
                times[(b, t)].append(time.perf_counter() - t0)
    print(f"| batch | threads | s/step (median) | images/s |\n|---|---|---|---|")
    for (b, t), ts in times.items():
        med = statistics.median(ts)
        print(f"| {b} | {t} | {med:.2f} | {b / med:.1f} |")


if __name__ == "__main__":
    main()
