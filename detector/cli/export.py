#!/usr/bin/env python
"""Export a trained detector to ONNX.

    python tools/export.py --weights runs/csppelee_efm_sam/best.pt                 # decoded boxes, 320
    python tools/export.py --weights best.pt --size 416 --dynamic                  # any batch / size
    python tools/export.py --weights best.pt --nms --conf-thres 0.25 --max-det 100 # final boxes
    python tools/export.py --weights best.pt --raw                                 # per-level outputs
    python tools/export.py --weights configs/csppelee_efm_sam.yaml                 # random weights (timing)
    python tools/export.py --weights best.pt --int8 --data configs/data/shapes.yaml  # + best_320_int8.onnx
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


import torch  # noqa: E402

from detector.config import find_config, trained_img_size  # noqa: E402
from detector.export.loading import load_model  # noqa: E402
from detector.export.onnx_export import export_onnx, DetectorWithNMS  # noqa: E402


def classifier_checkpoint(weights):
    """``(model, names, config)`` when ``weights`` is a classification checkpoint, else None.

    A classifier checkpoint's ``config["model"]`` describes a backbone (no neck/head) with
    ``num_classes > 0``; ``detector.build_model`` builds it."""
    if not str(weights).lower().endswith((".pt", ".pth")) or not os.path.isfile(weights):
        return None
    from detector import build_model
    from detector.engine.checkpoint import load_checkpoint, load_state_strict, model_state

    ckpt = load_checkpoint(weights)
    cfg = ckpt.get("config") or {}
    model_cfg = cfg.get("model") if isinstance(cfg, dict) else None
    if not isinstance(model_cfg, dict) or "neck" in model_cfg or "head" in model_cfg:
        return None
    model = build_model({"model": model_cfg})
    if not getattr(model, "num_classes", 0):
        raise ValueError(f"{weights}: a backbone without a classifier head (num_classes 0) has "
                         "nothing to export; export the detector that uses it")
    load_state_strict(model, model_state(ckpt), what=str(weights))
    names = [str(n) for n in (ckpt.get("names") or range(model.num_classes))]
    return model.eval(), names, dict(cfg)


def export_classifier(model, path, size, batch: int = 1, dynamic: bool = False, opset: int = 17,
                      names=None, config=None):
    """A classifier (deployed) -> ONNX with input ``images`` and output ``logits`` (B, classes)."""
    import copy
    import warnings

    import onnx

    from detector.export.onnx_export import write_metadata
    from detector.models.deploy import reparameterize

    net = reparameterize(copy.deepcopy(model).cpu().float().eval())
    h, w = size
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(batch, 3, h, w),), str(path), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["logits"], dynamic_axes=axes,
                          do_constant_folding=True)
    proto = onnx.load(str(path))
    meta = {"format_version": 1, "task": "classify", "names": list(names or []),
            "num_classes": int(model.num_classes), "img_size": None if dynamic else [h, w],
            "batch": None if dynamic else int(batch), "model": (config or {}).get("model", {})}
    return write_metadata(proto, meta, path)


def verify_classifier(model, path, size) -> str:
    from detector.export.onnx_runtime import make_session

    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = model.eval()(x)
    sess = make_session(path, providers=["CPUExecutionProvider"])
    out = sess.run(["logits"], {"images": x.numpy()})[0]
    return f"logits max abs difference {(ref - torch.from_numpy(out)).abs().max().item():.2e}"


def export_meta(config, trained: int) -> dict:
    """What an exported file carries from its checkpoint besides the network: the trained size
    and the data and eval sections, so that ``cspdet eval --weights best_320.onnx`` needs no
    --data (JSON-safe values only; a section that is not is left out)."""
    import json

    from detector.export.onnx_export import EXPORTED_SECTIONS

    meta = {"trained_img_size": trained}
    for key in EXPORTED_SECTIONS:
        value = config.get(key)
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        if value:
            meta[key] = value
    return meta


def verify(model, path, size, nms: bool, conf_thres, iou_thres, max_det, batch: int = 1) -> str:
    """Run PyTorch and ONNX Runtime on the same random input and report the difference."""
    import copy

    from detector.export.onnx_runtime import ONNXRuntimeDetector

    ort_model = ONNXRuntimeDetector(path)
    if ort_model.input_dtype.__name__ == "float16":
        return "float16 export: not compared on this machine"
    h, w = size
    x = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(0))
    net = copy.deepcopy(model).cpu().float().eval()  # the network as trained, not the deployed graph
    with torch.inference_mode():
        if nms:
            ref = DetectorWithNMS(net, conf_thres, iou_thres, max_det)(x)
            (out,) = ort_model.run(x)
            if ref.shape[0] != out.shape[0]:
                return f"PyTorch kept {ref.shape[0]} boxes, ONNX Runtime {out.shape[0]}"
            out = torch.from_numpy(out)
            # order among equal scores is free: match each box to its nearest of the same image/class
            same = (ref[:, None, 0] == out[None, :, 0]) & (ref[:, None, 6] == out[None, :, 6])
            dist = (ref[:, None, 1:6] - out[None, :, 1:6]).abs().amax(-1).masked_fill(~same, float("inf"))
            nearest = dist.min(1).values if ref.numel() else torch.zeros(0)
            matched = int((nearest < 1e-2).sum())
            note = "" if matched == len(nearest) else " (equal scores, as random weights give, may keep other boxes)"
            return f"{out.shape[0]} boxes, {matched} equal to PyTorch's within 1e-2{note}"
        if ort_model.outputs == "decoded":
            ref = net.decode(net(x))
            (out,) = ort_model.run(x)
            diff = (ref - torch.from_numpy(out)).abs()
            return (f"decoded outputs max abs difference: boxes {diff[..., :4].max().item():.2e} px, "
                    f"probabilities {diff[..., 4:].max().item():.2e}")
        ref = net(x)
        outs = ort_model.run(x)
        diff = max((r - torch.from_numpy(o)).abs().max().item() for r, o in zip(ref, outs))
        return f"raw outputs max abs difference {diff:.2e}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="checkpoint (.pt) or detector config (.yaml, random weights)")
    ap.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
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
                    help="also write a static INT8 (QDQ, per-channel) file calibrated on --data's train split")
    ap.add_argument("--data", default=None, help="with --int8: data YAML whose train split calibrates")
    ap.add_argument("--calib-images", type=int, default=64, help="with --int8: number of calibration images")
    args = ap.parse_args(argv)

    from detector.export.quantize import QuantizationError, calibration_images, quantize_onnx

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
    shipped_config = False
    if not os.path.exists(args.weights) and args.weights.lower().endswith((".yaml", ".yml")):
        args.weights, shipped_config = str(find_config(args.weights)), True  # a config by name
    if not os.path.exists(args.weights):
        ap.error(f"weights not found: {args.weights}")
    try:
        classifier = classifier_checkpoint(args.weights)
    except ValueError as e:
        ap.error(str(e))
    if classifier is not None:
        model, names, config = classifier
    else:
        loaded = load_model(args.weights, args.device, fuse=False)
        model, names, config = loaded.model, loaded.names, dict(loaded.config)
    trained = trained_img_size(config)
    size = (args.size[0], args.size[-1]) if args.size else (trained, trained)
    if args.output is None:
        stem, _ = os.path.splitext(os.path.basename(args.weights) if shipped_config else args.weights)
        suffix = f"_{size[0]}" + ("x%d" % size[1] if size[1] != size[0] else "")
        suffix += "_dynamic" if args.dynamic else ""
        suffix += "_nms" if args.nms else "_raw" if args.raw else ""
        suffix += "_fp16" if args.half else ""
        args.output = stem + suffix + ".onnx"
    if classifier is not None:
        if args.nms or args.int8 or args.half:
            ap.error("a classifier exports its logits only (no --nms / --int8 / --half)")
        path = export_classifier(model, args.output, size, args.batch, args.dynamic, args.opset, names, config)
        print(f"exported {path} (classifier, {len(names)} classes, opset {args.opset}, "
              f"{'dynamic' if args.dynamic else f'{size[0]}x{size[1]} batch {args.batch}'}); onnx.checker: ok")
        if not args.no_verify:
            print("check against PyTorch:", verify_classifier(model, path, size))
        return 0
    calib = None
    if args.int8:  # read the calibration images first: a data problem fails before any export
        try:
            calib = calibration_images(args.data, args.calib_images, size)
        except QuantizationError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    path = export_onnx(model, args.output, size, batch=args.batch, dynamic=args.dynamic, nms=args.nms, raw=args.raw,
                       half=args.half, conf_thres=args.conf_thres, iou_thres=args.iou_thres,
                       max_det=args.max_det, names=names, opset=args.opset, device=args.device,
                       extra_meta=export_meta(config, trained))
    size_mb = os.path.getsize(path) / 1e6
    print(f"exported {path} ({size_mb:.1f} MB, opset {args.opset}, "
          f"{'dynamic' if args.dynamic else f'{size[0]}x{size[1]} batch {args.batch}'}"
          f"{', NMS inside' if args.nms else ', raw level outputs' if args.raw else ', decoded boxes'}); "
          "onnx.checker: ok")
    if not args.no_verify:
        print("check against PyTorch:", verify(model, path, size, args.nms, args.conf_thres, args.iou_thres,
                                                args.max_det, 1 if args.dynamic else args.batch))
    if args.int8:
        out = os.path.splitext(str(path))[0] + "_int8.onnx"
        try:
            qpath = quantize_onnx(path, out, calib, extra_meta={"calibration": {
                "data": str(args.data), "split": "train", "images": int(len(calib))}})
        except QuantizationError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"exported {qpath} (INT8 static QDQ, per-channel, calibrated on {len(calib)} images of "
              f"{args.data} train; {os.path.getsize(qpath) / 1e6:.1f} MB)")
        if not args.no_verify:
            print("INT8 check against PyTorch:", verify(model, qpath, size, False, args.conf_thres,
                                                        args.iou_thres, args.max_det, 1).replace(
                                                            "max abs difference", "max abs difference (quantized)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
