#!/usr/bin/env python
"""Report every problem of a dataset before training.

    python tools/check_data.py --data configs/data/coco128.yaml
    python tools/check_data.py --data my_data.yaml --split train --no-decode

Lists missing, zero-byte and unreadable (corrupt/truncated) images, label files without an
image, background images, clipped and dropped boxes, crowd boxes, images converted on load
(grey, alpha, palette, 16-bit, EXIF-rotated) and unknown class ids (which stop training).
Exit status: 0 when nothing is lost, 1 when a split cannot be used or images/boxes are
skipped, so it can gate a training script.
"""
from __future__ import annotations

import argparse
import logging
import sys


from detector.data import load_data_config, prepare_data  # noqa: E402
from detector.data.config import SPLITS  # noqa: E402
from detector.data.check import check_split, format_check  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="data YAML (configs/data/*.yaml)")
    ap.add_argument("--split", nargs="+", default=["train", "val"], choices=SPLITS,
                    help="splits to check (default: train val; test too when asked)")
    ap.add_argument("--no-decode", action="store_true", help="labels only; do not open every image")
    ap.add_argument("--limit", type=int, default=20, help="files listed per note (clipped boxes, conversions, background; 0 = all); problems that lose data are always listed in full")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(message)s")

    cfg = load_data_config(args.data)
    print(f"data: {args.data} (format {cfg.format}, {len(cfg.names)} classes, root {cfg.root})")
    if cfg.generate is not None:
        cfg = prepare_data(cfg)
    ok = True
    for split in args.split:
        if getattr(cfg, split) is None:
            print(f"== split '{split}': not in the config")
            continue
        res = check_split(cfg, split, decode=not args.no_decode)
        print(format_check(res, args.limit))
        ok = ok and res.ok
    print("OK: nothing is lost" if ok else "PROBLEMS found (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
