"""Evaluate a classifier checkpoint: top-1 / top-5, most-confused class pairs, per-class accuracy.

    cspdet eval-cls --weights runs/cls_quickstart/best.pt                 # the data it was trained on
    cspdet eval-cls --weights best.pt --data /data/imagenet --split val --json metrics.json

The images go through the evaluation transform of training (short side to img_size / crop_pct,
centre crop); the size is the checkpoint's ``train.img_size`` unless ``--img-size`` is given.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="cspdet eval-cls", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True, help="classifier checkpoint (.pt from train-cls)")
    p.add_argument("--data", help="ImageFolder root or 'synthetic' (default: the checkpoint's data)")
    p.add_argument("--split", default="val", choices=("val", "train"))
    p.add_argument("--img-size", type=int, help="input size (default: the trained size)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="", help="cpu, cuda, cuda:1 (default: CUDA when available)")
    p.add_argument("--top", type=int, default=10, help="most-confused pairs and worst classes shown")
    p.add_argument("--all-classes", action="store_true", help="per-class accuracy of every class")
    p.add_argument("--json", help="also write the metrics (with the confusion matrix) here")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from detector.common import PathNotFoundError
    from detector.config import ConfigError
    from detector.engine.checkpoint import CheckpointError
    try:
        result, names = evaluate_checkpoint(args)
    except (ConfigError, CheckpointError, PathNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from detector.classification.evaluate import format_report, most_confused, per_class_accuracy
    print(format_report(result, names, top_pairs=args.top, worst=0 if args.all_classes else args.top))
    if args.json:
        out = {k: result[k] for k in ("top1", "top5", "loss", "images")}
        out.update(names=list(names), confusion=result["confusion"].tolist(),
                   per_class=dict(zip(names, per_class_accuracy(result["confusion"]))),
                   most_confused=most_confused(result["confusion"], names, args.top))
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    return 0


def evaluate_checkpoint(args):
    import torch

    from detector.classification.config import ClsDataConfig
    from detector.classification.data import ImageFolderDataset, build_eval_loader, eval_transform, split_dir
    from detector.classification.evaluate import evaluate_classifier
    from detector.config import ConfigError, from_dict, trained_img_size
    from detector.engine.runtime import select_device
    from detector.inference.weights import classifier_model_config, load_classifier
    from detector.models.state_dict import load_checkpoint

    ckpt = load_checkpoint(args.weights)
    if classifier_model_config(ckpt) is None:
        raise ConfigError(f"{args.weights} is not a classifier checkpoint (from cspdet train-cls); "
                          "evaluate detectors with cspdet eval")
    weights = load_classifier(ckpt, f"checkpoint {args.weights}")
    cfg = weights.config
    data = dict(cfg.get("data") or {})
    if args.data == "synthetic":
        data.update(root="", synthetic=data.get("synthetic") or {})
    elif args.data:
        data.update(root=args.data, synthetic=None)
    if not data:
        raise ConfigError(f"{args.weights} stores no data section: give --data FOLDER")
    data_cfg = from_dict(ClsDataConfig, data, "data")
    img_size = args.img_size or trained_img_size(cfg, default=224)
    names = list(ckpt.get("names") or [])  # none stored: the data's folder names
    dataset = ImageFolderDataset(split_dir(data_cfg, args.split), eval_transform(img_size, data_cfg.crop_pct),
                                 names=names or None)
    if weights.model.num_classes != len(dataset.names):
        raise ConfigError(f"the model has {weights.model.num_classes} classes, the data "
                          f"{len(dataset.names)}")
    device = select_device(args.device)
    model = weights.model.to(device).eval()
    loader = build_eval_loader(dataset, args.batch_size, args.workers)
    torch.set_grad_enabled(False)
    logging.getLogger("cspdet").info("%s: %d %s images, %d classes, %d px", args.weights, len(dataset),
                                     args.split, len(dataset.names), img_size)
    result = evaluate_classifier(model, loader, len(dataset.names), device,
                                 progress=not args.no_progress)
    return result, dataset.names


if __name__ == "__main__":
    sys.exit(main())
