#!/usr/bin/env python
"""COCO evaluation of a checkpoint or an exported ONNX model (pycocotools metrics).

    python tools/eval.py --weights runs/csppelee_efm_sam/best.pt                      # its own data/size
    python tools/eval.py --weights best.pt --data other.yaml --allow-name-mismatch   # same classes, other names
    python tools/eval.py --weights best.pt --data configs/data/coco.yaml --size 416 --batch 16
    python tools/eval.py --weights best_320.onnx                                      # ONNX Runtime, the data it was exported with
    python tools/eval.py --weights best_320_openvino                                  # OpenVINO (cspdet export --format openvino)
    python tools/eval.py --weights best.pt --device cuda --half

Prints AP, AP50, AP75, APs, APm, APl, a per-class AP table and the time per image split into
pre-process, inference and NMS; saves the detections as a COCO results JSON (and the metrics).
Beside them go the figures of docs/evaluation.md, and P/R/F1 per class are printed at
--report-conf, else the F1-optimal confidence the weights store, else this split's F1-optimal one.
Works on COCO JSON and YOLO txt datasets (YOLO labels become COCO ground truth in memory).
The input size is the checkpoint's trained size (``train.img_size``) or an ONNX file's fixed
size unless --size is given. Images that cannot be decoded are left out of the score and
counted. The data's class names must be the model's (in order) unless --allow-name-mismatch.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


import torch  # noqa: E402

from detector.common import ensure_writable_dir  # noqa: E402
from detector.config import ConfigError  # noqa: E402
from detector.evaluation import COCOEvaluator, evaluate, format_metrics, save_detections  # noqa: E402
from detector.evaluation.report import describe_conf, format_pr_table, write_eval_report  # noqa: E402
from detector.inference import Predictor, TorchBackend  # noqa: E402


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True,
                    help="checkpoint (.pt) or exported model (.onnx, or an OpenVINO export folder / .xml)")
    ap.add_argument("--openvino-precision", choices=["f32", "bf16", "f16"], default=None,
                    help="OpenVINO's inference precision (default: OpenVINO's own, bf16 on CPUs with AMX)")
    ap.add_argument("--data", default=None, help="data YAML (default: the checkpoint's own data section)")
    ap.add_argument("--split", default="val", help="data split to evaluate (default: val)")
    ap.add_argument("--size", type=int, default=None,
                    help="input size (default: the size the checkpoint was trained at, or the ONNX input size)")
    ap.add_argument("--batch", type=int, default=16, help="batch size")
    ap.add_argument("--conf-thres", type=float, default=None, help="score threshold (default: config or 0.001)")
    ap.add_argument("--iou-thres", type=float, default=None, help="NMS IoU threshold (default: config or 0.6)")
    ap.add_argument("--max-det", type=int, default=None, help="boxes per image (default: config or 300)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--half", action="store_true", help="float16 inference (CUDA only)")
    ap.add_argument("--workers", type=int, default=2, help="data loader workers")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    ap.add_argument("--max-images", type=int, default=None, help="evaluate the first N images only (quick check)")
    ap.add_argument("--allow-name-mismatch", action="store_true",
                    help="evaluate although the data's class names differ from the model's (same number, "
                         "index i scored as the data's class i)")
    ap.add_argument("--save-json", default=None,
                    help="COCO results JSON to write (default: runs/eval/<weights name>/detections_<split>.json); "
                         "the figures go to its folder")
    ap.add_argument("--no-plots", action="store_true",
                    help="no figures (curves, confusion matrix pictures, image grids): tables and CSV only")
    ap.add_argument("--report-conf", type=float, default=None,
                    help="confidence for the P/R/F1 table, confusion matrix and image grids (default: the "
                         "F1-optimal one stored with the weights, else the F1-optimal one on this split)")
    args = ap.parse_args(argv)
    if args.report_conf is not None and not 0.0 <= args.report_conf <= 1.0:
        ap.error(f"--report-conf must be in [0, 1], got {args.report_conf}")
    return args


def check_names(model_names, data_names, model_what: str, data_what: str, allow: bool = False) -> None:
    """The data must name the model's classes in the model's order (or ``allow`` says not)."""
    model_names, data_names = [str(n) for n in model_names], [str(n) for n in data_names]
    if len(model_names) != len(data_names):
        raise ConfigError(f"the model ({model_what}) has {len(model_names)} classes, the data ({data_what}) "
                          f"has {len(data_names)}: evaluate on the data the model was trained for")
    if model_names == data_names:
        return
    if model_names == [str(i) for i in range(len(model_names))]:
        print(f"note: {model_what} carries no class names; scoring index i as the data's '{data_names[0]}', ...")
        return
    diff = [f"{i}: model '{a}' / data '{b}'" for i, (a, b) in enumerate(zip(model_names, data_names)) if a != b]
    shown = "; ".join(diff[:10]) + (f"; ... ({len(diff) - 10} more)" if len(diff) > 10 else "")
    if not allow:
        raise ConfigError(f"the class names of the model ({model_what}) and of the data ({data_what}) differ "
                          f"at {len(diff)} of {len(model_names)} indices: {shown}. Evaluate on the data the "
                          "model was trained for, or pass --allow-name-mismatch to score index i as the "
                          "data's class i anyway")
    print(f"note: --allow-name-mismatch: {len(diff)} class names differ, scored by index: {shown}")


def open_model(args) -> Predictor:
    """The weights at the size rule (trained size, ONNX fixed size, or --size), refused here
    when evaluation cannot run them."""
    if args.half and not args.device.startswith("cuda"):
        raise ConfigError("--half needs a CUDA device (--device cuda); float16 on CPU is slower, not faster")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {args.device}: no CUDA GPU is available")
    loaded = Predictor(args.weights, img_size=args.size, device=args.device, threads=args.threads,
                       openvino_precision=args.openvino_precision)
    if args.half and loaded.backend != "pytorch":
        raise ConfigError("--half applies to PyTorch weights; an exported file runs in the precision it was exported in")
    size = loaded.img_size
    if not isinstance(size, int):
        raise ConfigError(f"{args.weights} takes {size[0]}x{size[1]} input; evaluation letterboxes to a "
                          "square: export with a square --size or --dynamic")
    if size % 32:
        raise ConfigError(f"--size must be a multiple of 32, got {size}")
    return loaded


def settings(args, loaded: Predictor) -> dict:
    """Thresholds (flags, else the weights' eval section, else COCO's) and the batch size a
    fixed-batch file takes; says so when the file decides."""
    eval_cfg = loaded.config.get("eval") or {}
    runner, name = loaded.runner, Path(args.weights).name
    conf = args.conf_thres if args.conf_thres is not None else eval_cfg.get("conf_thres", 0.001)
    iou = args.iou_thres if args.iou_thres is not None else eval_cfg.get("iou_thres", 0.6)
    max_det = args.max_det if args.max_det is not None else eval_cfg.get("max_det", 300)
    batch = args.batch
    if runner.max_batch and batch > runner.max_batch:
        print(f"note: {name} has a fixed batch of {runner.max_batch}; using --batch {runner.max_batch}")
        batch = runner.max_batch
    if runner.nms_in_graph:
        m = runner.model.meta
        print(f"note: NMS is inside {name} with conf {m['conf_thres']}, iou {m['iou_thres']}, max_det "
              f"{m['max_det']} (set at export); AP is usually measured at conf 0.001: export without "
              "--nms for the standard figure")
    return {"conf_thres": conf, "iou_thres": iou, "max_det": max_det, "batch": batch}


def results_path(args) -> Path:
    """Where the detections go (--save-json, else runs/eval/<weights name>/); figures beside them."""
    weights = Path(args.weights)
    name = weights.parent.name if weights.suffix.lower() == ".xml" else weights.stem  # OpenVINO: its folder
    return Path(args.save_json) if args.save_json else (
        Path("runs") / "eval" / name / f"detections_{args.split}.json")


def save_results(args, metrics: dict, summary: dict) -> None:
    """The detections (COCO results JSON) and the metrics beside them."""
    out = results_path(args)
    save_detections(metrics["detections"], out)
    summary = dict({k: v for k, v in metrics.items() if k not in ("detections", "summary")}, **summary)
    with open(out.with_name(out.stem + "_metrics.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    print(f"detections: {out} ({len(metrics['detections'])}); metrics: {out.with_name(out.stem + '_metrics.json')}")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ensure_writable_dir(results_path(args).parent, "eval output")  # before the work, not after it
    loaded = open_model(args)
    data_cfg = args.data or loaded.config.get("data")
    if data_cfg is None:
        raise ConfigError(f"{args.weights} carries no data config: pass --data (e.g. configs/data/coco.yaml)")
    size, run = loaded.img_size, settings(args, loaded)

    from detector.data import build_dataloader, build_dataset

    dataset = build_dataset(data_cfg, args.split, size, augment=None)
    check_names(loaded.names, dataset.names, f"{args.weights}", f"{dataset.name}", args.allow_name_mismatch)
    evaluator = COCOEvaluator(dataset.coco_gt(), dataset.label_to_cat_id, dataset.names)
    subset = dataset
    if args.max_images:
        subset = torch.utils.data.Subset(dataset, range(min(args.max_images, len(dataset))))
    loader = build_dataloader(subset, run["batch"], workers=args.workers, shuffle=False)
    print(f"evaluating {args.weights} ({loaded.backend}) on {getattr(dataset, 'name', args.split)}: "
          f"{len(subset)} images at {size}, batch {run['batch']}, conf {run['conf_thres']}, "
          f"iou {run['iou_thres']}, max_det {run['max_det']}")
    runner = loaded.runner
    if args.half:  # a float16 copy of the PyTorch network
        runner = TorchBackend(loaded.model, loaded.names, loaded.config, args.device, half=True)
    metrics = evaluate(runner, loader, conf_thres=run["conf_thres"], iou_thres=run["iou_thres"],
                       max_det=run["max_det"], evaluator=evaluator)
    print(format_metrics(metrics))
    folder = results_path(args).parent
    report = write_eval_report(evaluator, dataset, folder, conf=args.report_conf,
                               stored_conf=loaded.runner.stored_conf, plots=not args.no_plots)
    print(f"\nprecision / recall / F1 at {describe_conf(report, loaded.weights_kind)}\n"
          f"{format_pr_table(report['per_class'])}\n"
          f"figures: {folder}/ ({', '.join(sorted(report['files']))})")
    if metrics["unreadable_images"]:
        print(f"{len(metrics['unreadable_images'])} unreadable image(s) left out of the score: "
              + ", ".join(metrics["unreadable_images"]))
    save_results(args, metrics, {
        "weights": str(args.weights), "backend": loaded.backend,
        "data": str(data_cfg) if not isinstance(data_cfg, dict) else "inline", "split": args.split,
        "img_size": size, "conf_thres": run["conf_thres"], "iou_thres": run["iou_thres"],
        "max_det": run["max_det"], "half": args.half, "report_conf": report["conf"],
        "report_conf_source": report["conf_source"], "conf_thres_f1_here": report["best_conf"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
