#!/usr/bin/env python
"""Proof that training learns (issue 6, item 8): timed runs through the real trainer.

    # quick start: flagship on shapes at 320; target AP50 >= 0.90 on the val split in 15 min, 2 cores
    python benchmarks/train_proof.py shapes
    # overfit check on real photos: coco128 from scratch at 320, AP50 on the same images >= 0.5
    python benchmarks/train_proof.py coco128
    # GPU: training images/s at 416, batch 64, AMP (flagship; YOLOv8n too when ultralytics works)
    python benchmarks/train_proof.py gpu-throughput

Extra arguments are config overrides (``train.epochs=8``). Each mode prints a markdown block
(command, wall time, final metrics, pass/fail) to paste into benchmarks/RESULTS.md.
Wall time covers everything the user waits for: data preparation, training and evaluation.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as tools/train.py does
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLAGSHIP = "configs/csppelee_efm_sam.yaml"
MODES = {
    # mode: (overrides, metric, target, time limit in s)
    "shapes": ([], "AP50", 0.90, 15 * 60),
    # an overfit check: no mosaic, mild scale/shift, so 128 photos can be memorised from scratch
    "coco128": (["data=configs/data/coco128.yaml", "train.name=coco128", "train.epochs=120",
                 "train.batch_size=8", "train.close_mosaic=0", "eval.interval=20",
                 "train.augment.mosaic=0.0", "train.augment.scale=[0.8,1.2]",
                 "train.augment.translate=0.05", "train.cache=true"],
                "AP50", 0.50, None),
}


def train(overrides):
    from detector.engine.trainer import Trainer
    t0 = time.time()
    result = Trainer(str(REPO / FLAGSHIP), overrides=overrides).train()
    return result, time.time() - t0


def last_rows(run_dir, n=3):
    rows = list(csv.DictReader(open(Path(run_dir) / "results.csv")))
    return rows[-n:]


def report(mode, overrides, result, wall, metric, target, limit):
    m = result["metrics"]
    value = m.get(metric, float("nan"))
    ok = value >= target and (limit is None or wall <= limit)
    cmd = " ".join(["python tools/train.py --cfg", FLAGSHIP, *overrides])
    print(f"\n### {mode}\n")
    torch = __import__("torch")
    print(f"`{cmd}` on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
          f"(torch threads {torch.get_num_threads()})\n")
    print(f"- versions: torch {torch.__version__}, python {platform.python_version()}, "
          f"{platform.platform()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    print(f"- wall time: {wall / 60:.1f} min (limit {limit / 60:.0f} min)" if limit else
          f"- wall time: {wall / 60:.1f} min")
    print(f"- final AP {m.get('AP', float('nan')):.3f}, AP50 {m.get('AP50', float('nan')):.3f}, "
          f"AP75 {m.get('AP75', float('nan')):.3f} (EMA weights, {result['run_dir']})")
    print(f"- target {metric} >= {target}: {'PASS' if ok else 'FAIL'}")
    print("\n| epoch | box | obj | cls | AP50 | images/s |\n|---|---|---|---|---|---|")
    for r in last_rows(result["run_dir"], 100):
        print(f"| {r['epoch']} | {r['train/box']} | {r['train/obj']} | {r['train/cls']} | "
              f"{r['AP50'] or '-'} | {r['images_per_s']} |")
    return ok


def gpu_throughput(extra):
    """Training images/s at 416, batch 64, AMP: flagship through our trainer, then YOLOv8n."""
    import torch
    if not torch.cuda.is_available():
        sys.exit("gpu-throughput needs CUDA")
    overrides = ["train.name=gpu_throughput", "train.img_size=416", "eval.img_size=416",
                 "train.batch_size=64", "train.amp=bf16", "train.epochs=3", "eval.interval=0",
                 "train.workers=8", "train.cache=true", "train.exist_ok=true", *extra]
    result, wall = train(overrides)
    rows = last_rows(result["run_dir"], 100)
    ips = [float(r["images_per_s"]) for r in rows[1:]]  # epoch 1 includes cudnn autotuning
    print(f"flagship: {sum(ips) / max(len(ips), 1):.0f} images/s (epochs 2+, data loading included), "
          f"{torch.cuda.get_device_name()}")
    try:
        from ultralytics import YOLO
    except Exception as e:  # not installed / cannot import in this session
        print(f"YOLOv8n: skipped ({e})")
        return
    data = _ultralytics_shapes_yaml()
    model = YOLO("yolov8n.yaml")
    t0 = time.time()
    res = model.train(data=str(data), imgsz=416, batch=64, amp=True, epochs=3, workers=8,
                      cache=True, val=False, plots=False, project="/tmp/ultra", name="v8n", exist_ok=True,
                      pretrained=False)
    print(f"YOLOv8n: {3 * 1500 / (time.time() - t0):.0f} images/s over the whole call "
          f"(includes its start-up); per-epoch times in {getattr(res, 'save_dir', '/tmp/ultra/v8n')}")


def _ultralytics_shapes_yaml() -> Path:
    """Ultralytics wants YOLO txt labels: write them for the shapes data once."""
    import json
    from detector.data import prepare_data
    cfg = prepare_data(str(REPO / "configs/data/shapes.yaml"))
    root = Path(cfg.root)
    for split in ("train", "val"):
        s = cfg.split(split)
        gt = json.load(open(s.annotations))
        lab_dir = root / "labels" / split
        lab_dir.mkdir(parents=True, exist_ok=True)
        by_img = {im["id"]: (im, []) for im in gt["images"]}
        for a in gt["annotations"]:
            by_img[a["image_id"]][1].append(a)
        for im, anns in by_img.values():
            w, h = im["width"], im["height"]
            lines = [f"{a['category_id'] - 1} {(a['bbox'][0] + a['bbox'][2] / 2) / w:.6f} "
                     f"{(a['bbox'][1] + a['bbox'][3] / 2) / h:.6f} {a['bbox'][2] / w:.6f} {a['bbox'][3] / h:.6f}"
                     for a in anns]
            (lab_dir / (Path(im["file_name"]).stem + ".txt")).write_text("\n".join(lines))
    out = root / "ultralytics.yaml"
    names = "\n".join(f"  {i}: {n}" for i, n in enumerate(cfg.names))
    out.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=[*MODES, "gpu-throughput"])
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    import logging
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.mode == "gpu-throughput":
        return gpu_throughput(args.overrides)
    base, metric, target, limit = MODES[args.mode]
    overrides = [*base, *args.overrides]
    result, wall = train(overrides)
    ok = report(args.mode, overrides, result, wall, metric, target, limit)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
