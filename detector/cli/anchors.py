#!/usr/bin/env python
"""k-means anchors (distance 1 - IoU of boxes aligned at a corner) for a dataset, in config form.

    python tools/anchors.py --coco /work/shared/data/coco128/annotations/instances_train2017.json
    python tools/anchors.py --yolo-labels path/to/labels/train --images path/to/images/train
    python tools/anchors.py --data configs/data/coco.yaml --img-size 320 -k 9 --levels 3

Box sizes are measured after the letterbox resize to ``--img-size`` (the longest side scaled
to it), which is what the head's anchors are compared with. Prints the anchors grouped per
level (smallest to the finest stride) as a ``model.head.anchors`` YAML line, with the mean best
IoU and the share of boxes that some anchor matches within the loss's ratio threshold.
"""
from __future__ import annotations

import argparse
import sys

from ..data.anchors import (anchor_fitness, format_anchors, kmeans_anchors, sizes_from_coco,
                            sizes_from_data_config, sizes_from_yolo)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--coco", help="COCO instances JSON")
    src.add_argument("--yolo-labels", help="folder of YOLO txt labels (needs --images)")
    src.add_argument("--data", help="data config YAML (training split, via detector.data)")
    ap.add_argument("--images", help="images folder for --yolo-labels")
    ap.add_argument("--img-size", type=int, default=416, help="network input side (default 416)")
    ap.add_argument("-k", type=int, default=9, help="number of anchors (default 9)")
    ap.add_argument("--levels", type=int, default=3, help="output levels to split them over")
    ap.add_argument("--ratio-thresh", type=float, default=4.0, help="loss anchor_ratio_thresh")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.coco:
        wh = sizes_from_coco(args.coco, args.img_size)
    elif args.yolo_labels:
        if not args.images:
            ap.error("--yolo-labels needs --images")
        wh = sizes_from_yolo(args.yolo_labels, args.images, args.img_size)
    else:
        wh = sizes_from_data_config(args.data, args.img_size)
    if args.k % args.levels:
        ap.error(f"-k {args.k} must be a multiple of --levels {args.levels}")
    anchors = kmeans_anchors(wh, args.k, seed=args.seed)
    iou, recall = anchor_fitness(wh[(wh > 0).all(1)], anchors, args.ratio_thresh)
    print(f"# {len(wh)} boxes at img_size {args.img_size}: mean best IoU {iou:.3f}, "
          f"{100 * recall:.1f}% matched within ratio {args.ratio_thresh:g}")
    print(format_anchors(anchors, args.levels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
