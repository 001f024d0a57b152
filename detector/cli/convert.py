"""Convert a dataset between layouts: COCO JSON, YOLO txt and Pascal VOC XML, every split.

    cspdet convert --data configs/data/bccd.yaml --to coco datasets/bccd_coco
    cspdet convert --data my_voc.yaml --to yolo datasets/my_yolo --split train val

Reads each split as training does (problems reported the same way; run `cspdet check-data`
first to see them all), writes the target layout with its images (hard links when possible)
and OUT/data.yaml, which trains on it: `cspdet train --cfg X data=OUT/data.yaml`.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from detector.config import ConfigError
from detector.data import load_data_config, prepare_data
from detector.data.config import SPLITS
from detector.data.convert import TARGETS, convert_dataset


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="cspdet convert", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="data YAML of the dataset to convert")
    ap.add_argument("--to", required=True, choices=TARGETS, help="target layout")
    ap.add_argument("out", help="output folder (new or empty, unless --overwrite)")
    ap.add_argument("--split", nargs="+", choices=SPLITS, help="splits to convert (default: all in the YAML)")
    ap.add_argument("--overwrite", action="store_true", help="write into a folder that holds files")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise ConfigError(f"{out} is not empty (pass --overwrite to write into it)")
    cfg = prepare_data(load_data_config(args.data))
    result = convert_dataset(cfg, args.to, out, args.split, progress=print)
    for split, count in result.images.items():
        extra = (f", {result.left_out[split]} ignore regions (crowd / difficult) left out: YOLO "
                 f"labels have no such form" if result.left_out.get(split) else "")
        print(f"  {split}: {count} images, {result.boxes[split]} boxes{extra}")
    print(f"wrote {result.data_yaml}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
