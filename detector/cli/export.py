#!/usr/bin/env python
"""Export a trained detector to ONNX.

    python tools/export.py --weights runs/csppelee_efm_sam/best.pt                 # raw outputs, 320
    python tools/export.py --weights best.pt --size 416 --dynamic                  # any batch / size
    python tools/export.py --weights best.pt --nms --conf-thres 0.25 --max-det 100 # final boxes
    python tools/export.py --weights configs/csppelee_efm_sam.yaml                 # random weights (timing)

Without --nms the graph gives the raw head outputs (out_s8, out_s16, out_s32) and runs in ONNX
Runtime and OpenCV DNN; with --nms it gives ``detections`` (K, 7) = [batch, x1, y1, x2, y2,
score, label] in network-input pixels (ONNX Runtime). The file is checked with onnx.checker and
its outputs are compared with PyTorch's before the command reports success.
"""
from __future__ import annotations

import argparse
import os
import sys


import torch  # noqa: E402

from detector.export.onnx_export import export_onnx, DetectorWithNMS  # noqa: E402


def load_model(weights, device="cpu"):
    """A checkpoint (``.pt``) or a detector config (random weights) -> (model, names)."""
    from detector.inference import Predictor

    predictor = Predictor(weights, device=device, fuse=False)
    return predictor.model, list(predictor.names)


def verify(model, path, size, nms: bool, conf_thres, iou_thres, max_det, batch: int = 1) -> str:
    """Run PyTorch and ONNX Runtime on the same random input and report the difference."""
    import copy

    from detector.export.onnx_runtime import ONNXRuntimeDetector

    ort_model = ONNXRuntimeDetector(path)
    if ort_model.input_dtype.__name__ == "float16":
        return "float16 export: not compared on this machine"
    h, w = size
    x = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(0))
    net = copy.deepcopy(model).cpu().float().eval().fuse()
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
        ref = net(x)
        outs = ort_model.run(x)
        diff = max((r - torch.from_numpy(o)).abs().max().item() for r, o in zip(ref, outs))
        return f"raw outputs max abs difference {diff:.2e}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="checkpoint (.pt) or detector config (.yaml, random weights)")
    ap.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    ap.add_argument("--size", type=int, nargs="+", default=[320], help="input side, or height width (multiples of 32)")
    ap.add_argument("--batch", type=int, default=1, help="batch size of a fixed-shape export")
    ap.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width")
    ap.add_argument("--nms", action="store_true", help="decode + NMS inside the graph (final boxes)")
    ap.add_argument("--conf-thres", type=float, default=0.25, help="with --nms: score threshold")
    ap.add_argument("--iou-thres", type=float, default=0.45, help="with --nms: NMS IoU threshold")
    ap.add_argument("--max-det", type=int, default=100, help="with --nms: boxes kept per image")
    ap.add_argument("--half", action="store_true", help="float16 weights and input (needs --device cuda)")
    ap.add_argument("--opset", type=int, default=17, help="ONNX opset")
    ap.add_argument("--device", default="cpu", help="device used for tracing: cpu, cuda, cuda:0")
    ap.add_argument("-o", "--output", default=None, help="output file (default: next to the weights)")
    ap.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs PyTorch check")
    args = ap.parse_args(argv)

    if len(args.size) not in (1, 2):
        ap.error("--size takes one value (square) or two (height width)")
    size = (args.size[0], args.size[-1])
    if args.half and not args.device.startswith("cuda"):
        ap.error("--half needs --device cuda (ONNX Runtime's CPU provider has no float16 convolutions)")
    if args.half and not torch.cuda.is_available():
        ap.error("--half needs a CUDA GPU and none is available")
    model, names = load_model(args.weights, args.device)
    if args.output is None:
        stem, _ = os.path.splitext(args.weights)
        suffix = f"_{size[0]}" + ("x%d" % size[1] if size[1] != size[0] else "")
        suffix += "_dynamic" if args.dynamic else ""
        suffix += "_nms" if args.nms else ""
        suffix += "_fp16" if args.half else ""
        args.output = stem + suffix + ".onnx"
    path = export_onnx(model, args.output, size, batch=args.batch, dynamic=args.dynamic, nms=args.nms,
                       half=args.half, conf_thres=args.conf_thres, iou_thres=args.iou_thres,
                       max_det=args.max_det, names=names, opset=args.opset, device=args.device)
    size_mb = os.path.getsize(path) / 1e6
    print(f"exported {path} ({size_mb:.1f} MB, opset {args.opset}, "
          f"{'dynamic' if args.dynamic else f'{size[0]}x{size[1]} batch {args.batch}'}"
          f"{', NMS inside' if args.nms else ''}); onnx.checker: ok")
    if not args.no_verify:
        print("check against PyTorch:", verify(model, path, size, args.nms, args.conf_thres, args.iou_thres,
                                                args.max_det, 1 if args.dynamic else args.batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
