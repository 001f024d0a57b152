#!/usr/bin/env python
"""Export a trained detector to ONNX.

    python tools/export.py --weights runs/csppelee_efm_sam/best.pt                 # decoded boxes, 320
    python tools/export.py --weights best.pt --size 416 --dynamic                  # any batch / size
    python tools/export.py --weights best.pt --nms --conf-thres 0.25 --max-det 100 # final boxes
    python tools/export.py --weights best.pt --raw                                 # per-level outputs
    python tools/export.py --weights configs/csppelee_efm_sam.yaml                 # random weights (timing)
    python tools/export.py --weights best.pt --int8 --data configs/data/shapes.yaml  # + best_320_int8.onnx
    python tools/export.py --weights best.pt --format openvino --int8 --data configs/data/bccd.yaml
    python tools/export.py --weights cls.pt                                        # a classifier: logits

The input size defaults to the checkpoint's trained size (``train.img_size``, the rule
Predictor, eval and demo share). The graph is the deployed network (BatchNorm folded,
re-parameterised for ONNX Runtime's blocked layout, see detector/models/deploy.py): the same
outputs as the checkpoint in PyTorch. By default the graph ends in decoded boxes,
``predictions`` (B, N, 5+C) = xyxy input pixels, objectness, class probabilities (the
confidence filter and NMS run outside, in numpy); --raw ends at the raw head outputs (out_s8,
out_s16, out_s32); both run in ONNX Runtime and OpenCV DNN. With --nms it gives
``detections`` (K, 7) = [batch, x1, y1, x2, y2, score, label] in network-input pixels (ONNX
Runtime). --int8 also writes a statically quantized twin (QDQ, per-channel), calibrated on
--calib-images letterboxed images of --data's train split. A classification checkpoint (a
backbone with a classifier head) exports to a graph with one output, ``logits``. The file is
checked with onnx.checker and its outputs are compared with PyTorch's before the command
reports success.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from detector.common import ensure_writable_dir
from detector.config import ConfigError, find_config
from detector.export.exporter import ExportOptions, Exporter
from detector.export.openvino_export import OpenVINOUnavailableError
from detector.export.quantize import QuantizationError
from detector.inference.weights import load_detector, read_classifier


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="checkpoint (.pt) or detector config (.yaml, random weights)")
    ap.add_argument("--format", default="onnx", choices=["onnx", "openvino"],
                    help="onnx, or openvino (the ONNX file plus OpenVINO IR in <name>_openvino/; "
                         "pip install 'cspdet[openvino]')")
    ap.add_argument("--size", type=int, nargs="+", default=None,
                    help="input side, or height width (multiples of 32); default: the checkpoint's trained size")
    ap.add_argument("--batch", type=int, default=1, help="batch size of a fixed-shape export")
    ap.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    ap.add_argument("--nms", action="store_true", help="decode + NMS inside the graph (final boxes)")
    ap.add_argument("--raw", action="store_true",
                    help="end at the raw per-level head outputs (default: decoded boxes, NMS outside)")
    ap.add_argument("--conf-thres", type=float, default=0.25, help="with --nms: score threshold")
    ap.add_argument("--iou-thres", type=float, default=0.45, help="with --nms: NMS IoU threshold")
    ap.add_argument("--max-det", type=int, default=100, help="with --nms: boxes kept per image")
    ap.add_argument("--half", action="store_true", help="float16 weights and input (needs --device cuda)")
    ap.add_argument("--opset", type=int, default=17, help="ONNX opset")
    ap.add_argument("--device", default="cpu", help="device used for tracing: cpu, cuda, cuda:0")
    ap.add_argument("-o", "--output", default=None, help="output file (default: next to the weights)")
    ap.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    ap.add_argument("--int8", action="store_true",
                    help="also write a static INT8 file calibrated on --data's train split (onnx: QDQ, "
                         "per-channel, for ONNX Runtime; openvino: NNCF-quantized IR)")
    ap.add_argument("--data", default=None, help="with --int8: data YAML whose train split calibrates")
    ap.add_argument("--calib-images", type=int, default=64, help="with --int8: number of calibration images")
    return ap


def check_flags(ap: argparse.ArgumentParser, args) -> None:
    """Refuse flag combinations that cannot work, before anything is loaded."""
    if args.size is not None and len(args.size) not in (1, 2):
        ap.error("--size takes one value (square) or two (height width)")
    if args.half and not args.device.startswith("cuda"):
        ap.error("--half needs --device cuda (ONNX Runtime's CPU provider has no float16 convolutions)")
    if args.half and not torch.cuda.is_available():
        ap.error("--half needs a CUDA GPU and none is available")
    if args.nms and args.raw:
        ap.error("--nms and --raw are two different graph ends: choose one")
    if args.int8 and (args.half or args.nms):
        ap.error("--int8 quantizes a float32 graph without NMS: drop --half / --nms")
    if args.int8 and not args.data:
        ap.error("--int8 needs calibration images: pass --data configs/data/<name>.yaml (its train split)")
    if args.int8 and args.calib_images < 1:
        ap.error("--calib-images must be >= 1")
    if args.format == "openvino" and (args.half or args.nms):
        ap.error("--format openvino converts the float32 graph without NMS: drop --half / --nms")


def export_classifier(exporter: Exporter, output: str, args) -> int:
    path = exporter.classifier(output)
    print(f"exported {path} (classifier, {len(exporter.names)} classes, opset {args.opset}, "
          f"{exporter.options.describe()}); onnx.checker: ok")
    if not args.no_verify:
        print("check against PyTorch:", exporter.check(path))
    return 0


def export_detector(exporter: Exporter, output: str, args) -> int:
    calib = None
    try:
        if args.int8:  # read the calibration images first: a data problem fails before any export
            calib = exporter.calibration(args.data, args.calib_images, progress=True)
        path = exporter.onnx(output)
        form = ", NMS inside" if args.nms else ", raw level outputs" if args.raw else ", decoded boxes"
        print(f"exported {path} ({os.path.getsize(path) / 1e6:.1f} MB, opset {args.opset}, "
              f"{exporter.options.describe()}{form}); onnx.checker: ok")
        if not args.no_verify:
            print("check against PyTorch:", exporter.check(path))
        if args.format == "openvino":
            return export_openvino(exporter, path, calib, args)
        if args.int8:
            qpath = exporter.int8(path, calib, args.data)
            print(f"exported {qpath} (INT8 static QDQ, per-channel, calibrated on {len(calib)} images of "
                  f"{args.data} train; {os.path.getsize(qpath) / 1e6:.1f} MB)")
            if not args.no_verify:
                check = exporter.check(qpath).replace("max abs difference", "max abs difference (quantized)")
                print("INT8 check against PyTorch:", check)
    except (QuantizationError, OpenVINOUnavailableError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def export_openvino(exporter: Exporter, onnx_path, calib, args) -> int:
    """The OpenVINO IR of the ONNX file just written (and its NNCF INT8 twin with --int8)."""
    xml = exporter.openvino(onnx_path)
    print(f"exported {xml.parent}/ (OpenVINO IR, float32 weights; runs in eval, predict and the demo)")
    if not args.no_verify:
        print("OpenVINO check against PyTorch (f32):", exporter.check(xml))
    if args.int8:
        qxml = exporter.openvino_int8(onnx_path, calib, args.data)
        print(f"exported {qxml.parent}/ (OpenVINO IR, INT8 by NNCF, calibrated on {len(calib)} images of "
              f"{args.data} train)")
        if not args.no_verify:
            print("OpenVINO INT8 check against PyTorch:",
                  exporter.check(qxml).replace("max abs difference", "max abs difference (quantized)"))
    return 0


def main(argv=None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    check_flags(ap, args)
    shipped_config = False
    if not os.path.exists(args.weights) and args.weights.lower().endswith((".yaml", ".yml")):
        args.weights, shipped_config = str(find_config(args.weights)), True  # a config by name
    if not os.path.exists(args.weights):
        ap.error(f"weights not found: {args.weights}")
    try:
        classifier = read_classifier(args.weights)
    except ConfigError as e:
        ap.error(str(e))
    if classifier is not None and (args.nms or args.int8 or args.half or args.format != "onnx"):
        ap.error("a classifier exports its logits to ONNX only (no --nms / --int8 / --half / --format openvino)")
    weights = classifier or load_detector(args.weights)
    options = ExportOptions(
        size=(args.size[0], args.size[-1]) if args.size else None, batch=args.batch, dynamic=args.dynamic,
        nms=args.nms, raw=args.raw, half=args.half, conf_thres=args.conf_thres, iou_thres=args.iou_thres,
        max_det=args.max_det, opset=args.opset, device=args.device)
    exporter = Exporter(weights.model, weights.names, weights.config, options,
                        conf_thres_f1=weights.conf_thres_f1)
    output = args.output or exporter.default_path(args.weights, shipped_config)
    ensure_writable_dir(Path(output).resolve().parent, "export output")  # e.g. weights in a read-only folder
    return (export_classifier if classifier is not None else export_detector)(exporter, output, args)


if __name__ == "__main__":
    sys.exit(main())
