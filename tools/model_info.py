#!/usr/bin/env python
"""Print a model's parameters, GFLOPs, per-stage table and output shapes.

    python tools/model_info.py --cfg configs/backbones/csppeleenet.yaml
    python tools/model_info.py --cfg configs/backbones/cspdarknet53.yaml --size 256 320
    python tools/model_info.py --cfg <detector config> --size 320 416 512

Works for every config ``detector.build_model`` accepts (backbones, classifiers, detectors).
FLOPs: torch.utils.flop_counter, a multiply-add counted as 2, batch 1.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detector import build_model  # noqa: E402
from detector.models.info import format_summary, model_summary  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cfg", required=True, help="config YAML (backbone or detector)")
    ap.add_argument("--size", type=int, nargs="+", default=None,
                    help="input side(s); default 224 for a backbone, 320 for a detector")
    ap.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, repeatable, e.g. -o model.num_classes=0")
    args = ap.parse_args(argv)
    try:
        model = build_model(args.cfg, args.override)
    except ValueError as e:  # ConfigError included: bad key, block name, split ratio...
        print(f"error: {e}", file=sys.stderr)
        return 2
    is_detector = not hasattr(model, "stages")
    sizes = args.size or [320 if is_detector else 224]
    for i, size in enumerate(sizes):
        if i:
            print()
        print(format_summary(model_summary(model, size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
