#!/usr/bin/env python
"""Print a model's parameters, GFLOPs, per-stage table and output shapes.

    python tools/model_info.py --cfg configs/backbones/csppeleenet.yaml
    python tools/model_info.py --cfg configs/backbones/cspdarknet53.yaml --size 256 320
    python tools/model_info.py --cfg <detector config> --size 320 416 512
    python tools/model_info.py --table --cfg configs/backbones/*.yaml --size 224 256

``--table`` prints one markdown row per config (params, GFLOPs per size, and the paper's
figures when the config records them under ``model.paper``).

Works for every config ``detector.build_model`` accepts (backbones, classifiers, detectors).
FLOPs: torch.utils.flop_counter, a multiply-add counted as 2, batch 1.
"""
from __future__ import annotations

import argparse
import sys


from detector import build_model  # noqa: E402
from detector.models.info import format_summary, model_summary  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cfg", required=True, nargs="+", help="config YAML(s), backbone or detector")
    ap.add_argument("--table", action="store_true", help="one markdown table row per config")
    ap.add_argument("--size", type=int, nargs="+", default=None,
                    help="input side(s); default 224 for a backbone, 320 for a detector")
    ap.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, repeatable, e.g. -o model.num_classes=0")
    args = ap.parse_args(argv)
    rows = []
    for cfg in args.cfg:
        try:
            model = build_model(cfg, args.override)
        except ValueError as e:  # ConfigError included: bad key, block name, split ratio...
            print(f"error: {cfg}: {e}", file=sys.stderr)
            return 2
        is_detector = not hasattr(model, "stages")
        sizes = args.size or [320 if is_detector else 224]
        summaries = [model_summary(model, size) for size in sizes]
        if args.table:
            rows.append(_table_row(model, summaries))
            continue
        for i, summary in enumerate(summaries):
            if i or len(args.cfg) > 1:
                print()
            print(format_summary(summary))
    if args.table:
        sizes = args.size or [224]
        print("| model | params (M) | " + " | ".join(f"GFLOPs @{s}" for s in sizes)
              + " | paper params (M) | paper GFLOPs (input) |")
        print("|---|---:|" + "---:|" * len(sizes) + "---:|---:|")
        print("\n".join(rows))
    return 0


def _table_row(model, summaries) -> str:
    paper = dict(getattr(getattr(model, "config", None), "paper", None) or {})
    ref_p = f"{paper['params_m']:.2f}" if "params_m" in paper else "-"
    ref_f = (f"{paper['gflops']:.3f} ({paper.get('img_size', '?')})" if "gflops" in paper else "-")
    name = getattr(model, "name", type(model).__name__)
    flops = " | ".join(f"{s['gflops']:.3f}" for s in summaries)
    return f"| {name} | {summaries[0]['params'] / 1e6:.3f} | {flops} | {ref_p} | {ref_f} |"


if __name__ == "__main__":
    sys.exit(main())
