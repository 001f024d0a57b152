#!/usr/bin/env python
"""COCO evaluation of a checkpoint or an exported ONNX model (pycocotools metrics).

    python tools/eval.py --weights runs/csppelee_efm_sam/best.pt                      # its own data/size
    python tools/eval.py --weights best.pt --data configs/data/coco.yaml --size 416 --batch 16
    python tools/eval.py --weights best_320.onnx --data configs/data/coco128_yolo.yaml  # ONNX Runtime
    python tools/eval.py --weights best.pt --device cuda --half

Prints AP, AP50, AP75, APs, APm, APl, a per-class AP table and the time per image split into
pre-process, inference and NMS; saves the detections as a COCO results JSON (and the metrics).
Works on COCO JSON and YOLO txt datasets (YOLO labels become COCO ground truth in memory).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path


import torch  # noqa: E402

from detector.evaluation import COCOEvaluator, evaluate, format_metrics, save_detections  # noqa: E402
from detector.export.loading import load_model  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="checkpoint (.pt) or exported model (.onnx)")
    ap.add_argument("--data", default=None, help="data YAML (default: the checkpoint's own data section)")
    ap.add_argument("--split", default="val", help="data split to evaluate (default: val)")
    ap.add_argument("--size", type=int, default=None,
                    help="input size (default: the checkpoint's eval.img_size, the ONNX input size, or 416)")
    ap.add_argument("--batch", type=int, default=16, help="batch size")
    ap.add_argument("--conf-thres", type=float, default=None, help="score threshold (default: config or 0.001)")
    ap.add_argument("--iou-thres", type=float, default=None, help="NMS IoU threshold (default: config or 0.6)")
    ap.add_argument("--max-det", type=int, default=None, help="boxes per image (default: config or 300)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--half", action="store_true", help="float16 inference (CUDA only)")
    ap.add_argument("--workers", type=int, default=2, help="data loader workers")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    ap.add_argument("--max-images", type=int, default=None, help="evaluate the first N images only (quick check)")
    ap.add_argument("--save-json", default=None,
                    help="COCO results JSON to write (default: runs/eval/<weights name>/detections_<split>.json)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.half and not args.device.startswith("cuda"):
        raise SystemExit("--half needs a CUDA device (--device cuda); float16 on CPU is slower, not faster")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA GPU is available")

    loaded = load_model(args.weights, device=args.device, threads=args.threads)
    model = loaded.model
    eval_cfg = loaded.config.get("eval") or {}
    data_cfg = args.data or loaded.config.get("data")
    if data_cfg is None:
        raise SystemExit(f"{args.weights} carries no data config: pass --data (e.g. configs/data/coco.yaml)")

    size = args.size or eval_cfg.get("img_size")
    if loaded.img_size:  # a fixed-size ONNX export
        h, w = loaded.img_size
        if h != w:
            raise SystemExit(f"{args.weights} takes {h}x{w} input; evaluation letterboxes to a square: "
                             "export with a square --size or --dynamic")
        if size and size != h:
            raise SystemExit(f"{args.weights} was exported for {h}x{w}; use --size {h} or export with --dynamic")
        size = h
    size = int(size or 416)
    if size % 32:
        raise SystemExit(f"--size must be a multiple of 32, got {size}")
    conf = args.conf_thres if args.conf_thres is not None else eval_cfg.get("conf_thres", 0.001)
    iou = args.iou_thres if args.iou_thres is not None else eval_cfg.get("iou_thres", 0.6)
    max_det = args.max_det if args.max_det is not None else eval_cfg.get("max_det", 300)
    batch = args.batch
    if loaded.backend == "onnxruntime":
        if model.batch and batch > model.batch:
            print(f"note: {Path(args.weights).name} has a fixed batch of {model.batch}; using --batch {model.batch}")
            batch = model.batch
        if model.has_nms:
            m = model.meta
            print(f"note: NMS is inside {Path(args.weights).name} with conf {m['conf_thres']}, iou "
                  f"{m['iou_thres']}, max_det {m['max_det']} (set at export); AP is usually measured at "
                  "conf 0.001: export without --nms for the standard figure")

    from detector.data import build_dataloader, build_dataset

    dataset = build_dataset(data_cfg, args.split, size, augment=None)
    if len(dataset.names) != len(loaded.names):
        raise SystemExit(f"the model has {len(loaded.names)} classes, the data ({args.split}) has "
                         f"{len(dataset.names)}: evaluate on the data the model was trained for")
    evaluator = COCOEvaluator(dataset.coco_gt(), dataset.label_to_cat_id, dataset.names)
    subset = dataset
    if args.max_images:
        subset = torch.utils.data.Subset(dataset, range(min(args.max_images, len(dataset))))
    loader = build_dataloader(subset, batch, workers=args.workers, shuffle=False)
    print(f"evaluating {args.weights} ({loaded.backend}) on {getattr(dataset, 'name', args.split)}: "
          f"{len(subset)} images at {size}, batch {batch}, conf {conf}, iou {iou}, max_det {max_det}")
    metrics = evaluate(model, loader, conf_thres=conf, iou_thres=iou, max_det=max_det,
                       device=args.device if loaded.backend == "pytorch" else None,
                       half=args.half, evaluator=evaluator)
    print(format_metrics(metrics))

    out = Path(args.save_json) if args.save_json else (
        Path("runs") / "eval" / Path(args.weights).stem / f"detections_{args.split}.json")
    save_detections(metrics["detections"], out)
    summary = {k: v for k, v in metrics.items() if k not in ("detections", "summary")}
    summary.update(weights=str(args.weights), backend=loaded.backend, data=str(data_cfg) if not isinstance(
        data_cfg, dict) else "inline", split=args.split, img_size=size, conf_thres=conf, iou_thres=iou,
        max_det=max_det, half=args.half)
    with open(out.with_name(out.stem + "_metrics.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    print(f"detections: {out} ({len(metrics['detections'])}); metrics: {out.with_name(out.stem + '_metrics.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
