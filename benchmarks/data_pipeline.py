#!/usr/bin/env python
"""Images per second of the training data pipeline (mosaic on) over coco128, against
Ultralytics' training dataloader in the same run (when ``ultralytics`` is installed).

    python benchmarks/data_pipeline.py --sizes 640 416 --workers 2 --batch 16 --repeats 3

Both pipelines read the same 128 JPEGs (ours through the COCO JSON, Ultralytics through the
YOLO txt labels beside them), decode, mosaic, scale/translate, HSV-jitter and flip, with the
same number of worker processes, no RAM cache, and hand out collated uint8 batches. Each
measurement runs ``--epochs`` passes after one warm-up pass (worker start-up, file cache);
the runs alternate between the two pipelines so CPU contention hits both alike, and the
median of ``--repeats`` is reported.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COCO128 = ROOT.parent / "shared" / "data" / "coco128"


def rate(loader, epochs: int) -> float:
    """Images per second over ``epochs`` full passes (after one warm-up pass)."""
    it = iter(loader)
    for _ in range(len(loader)):  # warm-up pass
        next(it)
    n, t0 = 0, time.perf_counter()
    for _ in range(epochs * len(loader)):
        batch = next(it)
        n += len(batch["img"] if "img" in batch else batch["images"])
    return n / (time.perf_counter() - t0)


class Forever:
    """Iterate a loader pass after pass, re-entering ``iter`` per epoch as a trainer does."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        while True:
            yield from self.loader


def ours(size: int, workers: int, batch: int, cache: bool = False, seed: int = 0):
    from detector.data import AugmentConfig, build_dataloader, build_dataset
    ds = build_dataset(ROOT / "configs" / "data" / "coco128.yaml", "train", size,
                       augment=AugmentConfig(mosaic=1.0, mixup=0.0), cache=cache, seed=seed)
    return Forever(build_dataloader(ds, batch, workers, shuffle=True, seed=seed))


def ultralytics_loader(size: int, workers: int, batch: int, tmp: Path):
    import yaml
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_dataloader, build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset
    from ultralytics.utils import DEFAULT_CFG

    names = yaml.safe_load((ROOT / "configs" / "data" / "coco128.yaml").read_text())["names"]
    # Ultralytics writes a label cache beside the labels folder: give it a folder of links in
    # tmp so the shared data stays untouched (its path is resolved, so link files, not dirs)
    mirror = tmp / "coco128"
    if not mirror.exists():
        for sub in ("images", "labels"):
            (mirror / sub / "train2017").mkdir(parents=True)
            for f in (COCO128 / sub / "train2017").iterdir():
                (mirror / sub / "train2017" / f.name).symlink_to(f)
    data_yaml = tmp / "coco128_ultralytics.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": str(mirror), "train": "images/train2017",
                                         "val": "images/train2017",
                                         "names": dict(enumerate(names))}))
    data = check_det_dataset(str(data_yaml), autodownload=False)
    cfg = get_cfg(DEFAULT_CFG, {"imgsz": size, "mosaic": 1.0, "mixup": 0.0, "cache": False,
                                "workers": workers, "batch": batch, "task": "detect"})
    ds = build_yolo_dataset(cfg, data["train"], batch, data, mode="train", stride=32)
    loader = build_dataloader(ds, batch, workers, shuffle=True, rank=-1, device="cpu")
    # fairness check: full training augmentation, same batch and workers, no RAM cache
    steps = [type(t).__name__ for t in ds.transforms.transforms]
    pre = [type(t).__name__ for t in getattr(ds.transforms.transforms[0], "transforms", [])]
    print(f"  ultralytics {size}: batch {loader.batch_size}, workers {loader.num_workers}, "
          f"cache {ds.cache}, mosaic buffer {ds.max_buffer_length}, transforms {pre} + {steps[1:]}",
          flush=True)
    return Forever(loader)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[640, 416])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2, help="timed passes over the 128 images per run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-ultralytics", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if not COCO128.is_dir():
        print(f"coco128 not found at {COCO128}")
        return 1
    try:
        import ultralytics  # noqa: F401
        have_ul = not args.no_ultralytics
        os.environ.setdefault("YOLO_VERBOSE", "False")
    except ImportError:
        have_ul = False
    import torch
    print(f"cpu cores: {os.cpu_count()}, torch threads {torch.get_num_threads()}, workers {args.workers}, "
          f"batch {args.batch}, {args.epochs} timed passes x {args.repeats} repeats")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            loaders = {"cspdet": ours(size, args.workers, args.batch),
                       "cspdet, RAM cache": ours(size, args.workers, args.batch, cache=True)}
            if have_ul:
                loaders["ultralytics YOLODataset"] = ultralytics_loader(size, args.workers, args.batch, Path(tmp))
            runs = {k: [] for k in loaders}
            for _ in range(args.repeats):
                for name, loader in loaders.items():
                    runs[name].append(rate(loader, args.epochs))
            for name, r in runs.items():
                results[(size, name)] = statistics.median(r)
                print(f"{size:4d}  {name:34s} {statistics.median(r):7.1f} img/s   "
                      f"(runs: {', '.join(f'{x:.1f}' for x in r)})", flush=True)
            del loaders
    return 0


if __name__ == "__main__":
    sys.exit(main())
