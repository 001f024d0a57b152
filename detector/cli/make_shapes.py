#!/usr/bin/env python
"""Write the synthetic shapes dataset (JPEGs + COCO JSON, train and val splits).

    python tools/make_shapes.py --out datasets/shapes --num-train 1500 --num-val 200 --img-size 320

Same arguments = same images (deterministic by --seed). configs/data/shapes.yaml does this
automatically on first use, into a cache folder.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


from detector.data.shapes import CLASSES, make_shapes  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--num-train", type=int, default=1500)
    ap.add_argument("--num-val", type=int, default=200)
    ap.add_argument("--img-size", type=int, default=320, help="long side of the images")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.time()
    out = make_shapes(args.out, args.num_train, args.num_val, args.img_size, args.seed)
    print(f"wrote {args.num_train} train + {args.num_val} val images ({', '.join(CLASSES)}) to {out} "
          f"in {time.time() - t0:.0f} s")
    print("use it with a data YAML such as:\n"
          f"  format: coco\n  root: {Path(out).resolve()}\n"
          "  train: {images: images/train, annotations: annotations/instances_train.json}\n"
          "  val: {images: images/val, annotations: annotations/instances_val.json}\n"
          f"  names: [{', '.join(CLASSES)}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
