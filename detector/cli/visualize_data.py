#!/usr/bin/env python
"""Save a PNG grid of (augmented) training samples with their boxes and class names.

    python tools/visualize_data.py --data configs/data/coco128.yaml --out runs/data_grid.png
    python tools/visualize_data.py --data configs/data/shapes.yaml --no-augment --num 9

Look at it before training: boxes must sit on the objects, names must be right.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import cv2
import numpy as np


from detector.config import load_yaml  # noqa: E402
from detector.data import AugmentConfig, build_dataset, load_augment_config  # noqa: E402
from detector.drawing import draw_boxes  # noqa: E402


def draw_sample(image: np.ndarray, targets: np.ndarray, names) -> np.ndarray:
    """RGB image (H, W, 3) with boxes and labels drawn; returns a BGR copy for OpenCV."""
    img = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    return draw_boxes(img, targets[:, 1:], targets[:, 0], names, line_width=2)


def make_grid(tiles, cols: int) -> np.ndarray:
    h, w = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / cols)
    grid = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = tile
    return grid


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="data YAML (configs/data/*.yaml)")
    ap.add_argument("--split", default="train", choices=("train", "val"))
    ap.add_argument("--img-size", type=int, default=640)
    ap.add_argument("--num", type=int, default=16, help="number of samples")
    ap.add_argument("--cols", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--augment", default="", help="a training YAML whose train.augment section to "
                    "use, or an augment YAML mapping; default: the built-in defaults")
    ap.add_argument("--mixup", type=float, default=None, help="override the mixup probability")
    ap.add_argument("--no-augment", action="store_true", help="evaluation transform (letterbox only)")
    ap.add_argument("--out", default="runs/data_samples.png")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    augment = None
    if not args.no_augment:
        if args.augment:
            d = load_yaml(args.augment)
            d = d.get("train", {}).get("augment", d) if "train" in d else d
            augment = load_augment_config(d)
        else:
            augment = AugmentConfig()
        if args.mixup is not None:
            augment.mixup = args.mixup
    ds = build_dataset(args.data, args.split, args.img_size, augment=augment, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    indices = rng.choice(len(ds), size=min(args.num, len(ds)), replace=False)
    tiles = []
    for i in indices:
        item = ds[int(i)]
        tiles.append(draw_sample(item["image"].permute(1, 2, 0).numpy(), item["targets"].numpy(), ds.names))
    grid = make_grid(tiles, min(args.cols, len(tiles)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), grid)
    print(f"saved {len(tiles)} samples to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
