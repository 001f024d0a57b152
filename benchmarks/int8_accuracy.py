#!/usr/bin/env python
"""What INT8 costs in accuracy: one checkpoint's fp32 and INT8 files, in ONNX Runtime and in
OpenVINO, scored by the same evaluator on the same split, with the per-class AP50 change.

    python benchmarks/int8_accuracy.py --weights runs/small_data/best.pt --data configs/data/bccd.yaml
    python benchmarks/int8_accuracy.py --weights runs/csppelee_efm_sam/best.pt     # its own data (shapes)

Files are written by the same code as ``cspdet export [--format openvino] --int8`` (the
:class:`~detector.export.Exporter`), calibrated on ``--calib-images`` letterboxed images of the
data's *train* split; scored on ``--split`` (default val, never the calibration images) with
conf 0.001, NMS IoU 0.6, 300 boxes, as ``cspdet eval`` does. OpenVINO runs at its default
precision (bf16 on CPUs with AMX) and, for the fp32 file, also at ``f32``. The target of the
project: an INT8 file loses at most 0.5 AP50 point against its own fp32 file.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Dict, List

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONF, IOU, MAX_DET = 0.001, 0.6, 300


def export_files(weights, data, calib_images: int, out: Path, openvino: bool) -> Dict[str, dict]:
    """{label: {"path", "precision"}} of every file to score (written under ``out``)."""
    from detector.export import ExportOptions, Exporter
    from detector.inference import load_detector

    w = load_detector(weights)
    exporter = Exporter(w.model, w.names, w.config, ExportOptions(), conf_thres_f1=w.conf_thres_f1)
    calib = exporter.calibration(data, calib_images, progress=True)
    fp32 = exporter.onnx(out / "model.onnx")
    files = {"ORT fp32": {"path": fp32}, "ORT INT8": {"path": exporter.int8(fp32, calib, data)}}
    if openvino:
        xml = exporter.openvino(fp32)
        files["OpenVINO fp32 (f32)"] = {"path": xml, "precision": "f32"}
        files["OpenVINO fp32 (default)"] = {"path": xml}
        files["OpenVINO INT8 (default)"] = {"path": exporter.openvino_int8(fp32, calib, data)}
    return files


def score(files: Dict[str, dict], data, split: str, threads: int) -> Dict[str, dict]:
    from detector.data import build_dataloader, build_dataset
    from detector.evaluation import evaluate
    from detector.inference import Predictor

    metrics, loaders = {}, {}
    for label, f in files.items():
        pred = Predictor(str(f["path"]), threads=threads, openvino_precision=f.get("precision"))
        if pred.img_size not in loaders:  # every file has the export size: the split is read once
            dataset = build_dataset(data, split, pred.img_size, augment=None)
            loaders[pred.img_size] = build_dataloader(dataset, 1, workers=0, shuffle=False)
        metrics[label] = evaluate(pred.runner, loaders[pred.img_size], CONF, IOU, MAX_DET, progress=False)
        m = metrics[label]
        print(f"{label}: AP {m['AP']:.4f}  AP50 {m['AP50']:.4f}  ({m['timing']['infer']:.1f} ms/image inference)")
    return metrics


def table(metrics: Dict[str, dict]) -> List[str]:
    """AP, AP50 and per-class AP50, each INT8 row with its change against its engine's fp32."""
    labels = list(metrics)
    classes = [r["name"] for r in metrics[labels[0]]["per_class"]]
    head = ["file", "AP", "AP50", "AP50 change vs its fp32"] + [f"{c} AP50 (change)" for c in classes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in labels:
        m = metrics[label]
        ref_label = ("ORT fp32" if label.startswith("ORT") else "OpenVINO fp32 (default)")
        ref = metrics.get(ref_label) if "INT8" in label else None
        change = f"{100 * (m['AP50'] - ref['AP50']):+.2f} pt" if ref else "-"
        cells = [label, f"{m['AP']:.4f}", f"{m['AP50']:.4f}", change]
        ref_cls = {r["name"]: r["AP50"] for r in ref["per_class"]} if ref else {}
        for r in m["per_class"]:
            c = f"{r['AP50']:.3f}"
            if r["name"] in ref_cls:
                c += f" ({100 * (r['AP50'] - ref_cls[r['name']]):+.1f})"
            cells.append(c)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="a detector checkpoint (.pt)")
    ap.add_argument("--data", default=None, help="data YAML (default: the checkpoint's own data section)")
    ap.add_argument("--split", default="val", help="the split scored (calibration uses train)")
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-openvino", action="store_true", help="ONNX Runtime only")
    ap.add_argument("--out", default=None, help="folder for the files (default: a temporary one)")
    args = ap.parse_args(argv)

    from detector import __version__
    from detector.benchmark.machine import machine_line
    from detector.benchmark.runner import openvino_available
    from detector.inference import load_detector

    data = args.data or load_detector(args.weights).config.get("data")
    if data is None:
        ap.error(f"{args.weights} carries no data config: pass --data")
    openvino = not args.no_openvino and openvino_available()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        files = export_files(args.weights, data, args.calib_images, out, openvino)
        metrics = score(files, data, args.split, args.threads)
    print(f"\ncspdet {__version__}; {machine_line(args.threads)}")
    print(f"{args.weights} on {data} {args.split}; INT8 calibrated on {args.calib_images} train images\n")
    print("\n".join(table(metrics)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
