#!/usr/bin/env python
"""Ours against Ultralytics YOLO11n / YOLOv8n / YOLO26n, trained from scratch on the same images.

    python benchmarks/head_to_head.py                                  # proxy set, 160 px, 3 epochs
    python benchmarks/head_to_head.py --epochs 10 --img-size 320 --num-train 2000 --device cuda
    python benchmarks/head_to_head.py --models ours yolo11n --data configs/data/shapes.yaml

Every model trains on the same train split (ours from the COCO JSON, Ultralytics from a YOLO-txt
copy of the same split: symlinked images plus labels converted from the JSON), with the same
epochs, batch and input size, from random weights, each with its own default recipe otherwise.
Every model is scored by the same code on the same val images: our
``detector.evaluation.COCOEvaluator`` (pycocotools) over the val split's ground truth, with the
same thresholds (conf 0.001, NMS IoU 0.6, 300 detections); Ultralytics' predictions are
converted to COCO results (original-image pixels, our category ids). Ours is scored by its
trainer's evaluation after each epoch; Ultralytics' per-epoch checkpoints are scored
afterwards.

Reported: AP, AP50, AP75 at equal epochs (the last epoch), and at equal wall time (each
model's last epoch finished within the shortest total training time of all models), training
time (the training loops only; evaluation excluded) and PyTorch inference ms (batch 1, fused,
no NMS, models timed in alternating rounds).

Nothing is downloaded: Ultralytics models are built from their yaml files, plots and AMP checks
are off, ``YOLO_OFFLINE=1`` is set and every network connection is refused and counted (the
count is printed; it must be 0).
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import shlex
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["YOLO_OFFLINE"] = "1"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"  # albumentations checks PyPI for updates on import
os.environ.setdefault("YOLO_VERBOSE", "False")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PEERS = {"yolo11n": "yolo11n.yaml", "yolov8n": "yolov8n.yaml", "yolo26n": "yolo26n.yaml"}
CONF, IOU, MAX_DET = 0.001, 0.6, 300

# ----------------------------------------------------------------- no network, counted
NETWORK_ATTEMPTS: List[str] = []
_connect = socket.socket.connect


def _refuse(self, address, *args, **kwargs):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        import traceback
        frames = [f for f in traceback.extract_stack()[:-1] if "site-packages" in f.filename]
        where = (f" from {frames[-1].filename.split('site-packages/')[-1]}:{frames[-1].lineno}"
                 if frames else "")
        NETWORK_ATTEMPTS.append(f"{address}{where}")
        raise OSError(f"head_to_head: network access refused ({address})")
    return _connect(self, address, *args, **kwargs)


socket.socket.connect = _refuse


# ----------------------------------------------------------------- data
def prepare(args) -> dict:
    """The data config (a dict) with the budget's split sizes; generates it on first use."""
    from detector.config import load_yaml
    from detector.data import prepare_data

    path = Path(args.data)
    if not path.is_file():
        path = ROOT / args.data
    data = load_yaml(path)
    data["_source"] = str(path.resolve())
    if data.get("generate"):
        data["generate"].update(num_train=args.num_train, num_val=args.num_val, img_size=args.gen_size or args.img_size)
    cfg = prepare_data(copy.deepcopy(data))
    return {"dict": data, "cfg": cfg}


def write_yolo_layout(cfg, out: Path) -> Path:
    """The same split as YOLO txt: images symlinked, labels from the COCO JSON; returns data.yaml."""
    import yaml

    for split in ("train", "val"):
        s = cfg.split(split)
        gt = json.loads(Path(s.annotations).read_text())
        img_dir, lbl_dir = out / "images" / split, out / "labels" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
        cat_index = {c["id"]: i for i, c in enumerate(sorted(gt["categories"], key=lambda c: c["id"]))}
        by_image: Dict[int, list] = {}
        for a in gt["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        for im in gt["images"]:
            link = img_dir / im["file_name"]
            if not link.exists():
                link.symlink_to(Path(s.images) / im["file_name"])
            w, h = im["width"], im["height"]
            lines = []
            for a in by_image.get(im["id"], []):
                if a.get("iscrowd"):
                    continue
                x, y, bw, bh = a["bbox"]
                lines.append(f"{cat_index[a['category_id']]} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} "
                             f"{bw / w:.6f} {bh / h:.6f}")
            (lbl_dir / (Path(im["file_name"]).stem + ".txt")).write_text("\n".join(lines) + ("\n" if lines else ""))
    data_yaml = out / "data.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": str(out), "train": "images/train", "val": "images/val",
                                         "names": {i: n for i, n in enumerate(cfg.names)}}))
    return data_yaml


def yolo_labels_as_detections(val, labels_dir: Path) -> float:
    """AP of the YOLO-txt val labels read back as detections (score 1): 1.0 when the layout
    Ultralytics trains on and our scoring path agree (boxes, classes, image ids)."""
    import numpy as np

    from detector.evaluation import COCOEvaluator

    coco = val.coco_gt()
    evaluator = COCOEvaluator(coco, val.label_to_cat_id, val.names)
    for im in coco.imgs.values():
        rows = np.loadtxt(labels_dir / (Path(im["file_name"]).stem + ".txt"), ndmin=2).reshape(-1, 5)
        w, h = im["width"], im["height"]
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        evaluator.update([{"boxes": boxes, "scores": np.ones(len(rows)), "labels": rows[:, 0].astype(np.int64)}],
                         [{"image_id": im["id"]}], letterboxed=False)
    return float(evaluator.summarize()["AP"])


def val_dataset(data: dict, size: int):
    from detector.data import build_dataset

    return build_dataset(copy.deepcopy(data), "val", size, augment=None)


# ----------------------------------------------------------------- ours
def train_ours(args, data: dict, out: Path) -> dict:
    from detector.config import load_config
    from detector.engine.trainer import Trainer
    from detector.models.detector import resolve_backbone_config

    cfg = load_config(str(ROOT / args.config))
    cfg.pop("_source", None)
    cfg["model"]["backbone"] = resolve_backbone_config(cfg["model"]["backbone"])
    cfg["data"] = copy.deepcopy(data)
    cfg["train"].update(name="ours", save_dir=str(out), exist_ok=True, epochs=args.epochs,
                        batch_size=args.batch, img_size=args.img_size, workers=args.workers,
                        seed=args.seed, device=args.device, threads=args.threads, plots=False,
                        tensorboard=False)
    cfg["eval"].update(img_size=args.img_size, interval=1, conf_thres=CONF, iou_thres=IOU, max_det=MAX_DET)
    t0 = time.perf_counter()
    result = Trainer(cfg, progress=not args.no_progress).train()
    wall = time.perf_counter() - t0
    run_dir = Path(result["run_dir"])
    epochs = []
    with open(run_dir / "results.csv", newline="") as f:
        for row in csv.DictReader(f):
            epochs.append({"epoch": int(row["epoch"]), "train_s": float(row["epoch_time_s"]),
                           **{k: float(row[k]) for k in ("AP", "AP50", "AP75") if row.get(k) not in (None, "")}})
    import torch

    from detector.inference import Predictor
    module = Predictor(run_dir / "last.pt", fuse=True).model
    return {"name": f"ours ({Path(args.config).stem})", "epochs": epochs, "wall_s": wall,
            "module": module, "params": sum(p.numel() for p in module.parameters()),
            "torch": torch.__version__}


# ----------------------------------------------------------------- Ultralytics
def train_peer(name: str, args, data_yaml: Path, out: Path) -> dict:
    import ultralytics.utils.torch_utils as torch_utils
    from ultralytics import YOLO

    # Ultralytics trains on cpu_count - 1 threads (1 on a 2-core box); give it what ours has
    torch_utils.NUM_THREADS = args.threads

    model = YOLO(PEERS[name])  # built from the yaml: random weights, nothing downloaded
    marks: Dict[str, list] = {"start": [], "end": []}
    model.add_callback("on_train_epoch_start", lambda tr: marks["start"].append(time.perf_counter()))
    model.add_callback("on_train_epoch_end", lambda tr: marks["end"].append(time.perf_counter()))
    t0 = time.perf_counter()
    model.train(data=str(data_yaml), epochs=args.epochs, batch=args.batch, imgsz=args.img_size,
                device=args.device or "cpu", workers=args.workers, seed=args.seed, pretrained=False,
                amp=False if (args.device or "cpu") == "cpu" else True, plots=False, val=False,
                save_period=1, project=str(out), name=name, exist_ok=True, verbose=False)
    wall = time.perf_counter() - t0
    wdir = out / name / "weights"
    ckpts = sorted(wdir.glob("epoch*.pt"), key=lambda p: int(p.stem[5:]))
    # epoch numbering of save_period files: 0- or 1-based depending on the version; the last
    # epoch is last.pt either way
    per_epoch = [p for p in ckpts][: args.epochs - 1] + [wdir / "last.pt"]
    if len(per_epoch) < args.epochs:
        per_epoch = [None] * (args.epochs - len(per_epoch)) + per_epoch
    times = [e - s for s, e in zip(marks["start"], marks["end"])]
    return {"name": name, "wall_s": wall, "ckpts": per_epoch, "times": times}


def score_peer(ckpt: Path, args, val, images_dir: Path) -> dict:
    """COCO metrics of an Ultralytics checkpoint on our val split, scored by our evaluator."""
    import numpy as np
    from ultralytics import YOLO

    from detector.evaluation import COCOEvaluator

    coco = val.coco_gt()
    evaluator = COCOEvaluator(coco, val.label_to_cat_id, val.names)
    model = YOLO(str(ckpt))
    images = sorted(coco.imgs.values(), key=lambda im: im["id"])
    for i in range(0, len(images), 16):
        chunk = images[i:i + 16]
        results = model.predict([str(images_dir / im["file_name"]) for im in chunk], imgsz=args.img_size,
                                conf=CONF, iou=IOU, max_det=MAX_DET, device=args.device or "cpu",
                                verbose=False)
        preds, metas = [], []
        for im, r in zip(chunk, results):
            b = r.boxes
            preds.append({"boxes": b.xyxy.cpu().numpy().astype(np.float64),
                          "scores": b.conf.cpu().numpy(), "labels": b.cls.cpu().numpy().astype(np.int64)})
            metas.append({"image_id": im["id"]})
        evaluator.update(preds, metas, letterboxed=False)
    m = evaluator.summarize()
    return {k: float(m[k]) for k in ("AP", "AP50", "AP75")}


# ----------------------------------------------------------------- timing
def inference_ms(modules: Dict[str, object], size: int, rounds: int) -> Dict[str, float]:
    import torch

    x = torch.zeros(1, 3, size, size)
    samples = {k: [] for k in modules}
    with torch.inference_mode():
        for m in modules.values():
            for _ in range(3):
                m(x)
        for _ in range(rounds):
            for k, m in modules.items():
                t0 = time.perf_counter()
                m(x)
                samples[k].append(time.perf_counter() - t0)
    return {k: 1000 * statistics.median(v) for k, v in samples.items()}


def fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


# ----------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="configs/data/proxy.yaml")
    p.add_argument("--config", default="configs/csppelee_efm_sam.yaml", help="our model")
    p.add_argument("--models", nargs="+", default=["ours", "yolo11n", "yolov8n", "yolo26n"])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--img-size", type=int, default=160)
    p.add_argument("--num-train", type=int, default=320, help="generated sets: train images")
    p.add_argument("--num-val", type=int, default=100, help="generated sets: val images")
    p.add_argument("--gen-size", type=int, default=0, help="generated sets: image size (0 = --img-size)")
    p.add_argument("--workers", type=int, default=1, help="our data-loading processes")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads, every model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=30, help="timed inference rounds")
    p.add_argument("--out", default="runs/head_to_head")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    unknown = [m for m in args.models if m != "ours" and m not in PEERS]
    if unknown:
        print(f"head_to_head: unknown models {unknown}; choose from ours, {', '.join(PEERS)}", file=sys.stderr)
        return 2
    import logging
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    from detector.benchmark.machine import load_average, machine_line
    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = prepare(args)
    val = val_dataset(data["dict"], args.img_size)
    rows = []
    modules = {}
    sanity_ap = None
    if "ours" in args.models:  # first: Ultralytics changes process-wide settings when imported
        r = train_ours(args, data["dict"], out)
        modules[r["name"]] = r.pop("module")
        rows.append({"name": r["name"], "params": r["params"], "wall_s": r["wall_s"],
                     "epochs": r["epochs"]})
    peers = [m for m in args.models if m != "ours"]
    if peers:
        data_yaml = write_yolo_layout(data["cfg"], out / "yolo_data")
        sanity_ap = yolo_labels_as_detections(val, out / "yolo_data" / "labels" / "val")
        for name in peers:
            r = train_peer(name, args, data_yaml, out)
            epochs = []
            for e, ckpt in enumerate(r["ckpts"]):
                metrics = score_peer(ckpt, args, val, Path(data["cfg"].split("val").images)) if ckpt else {}
                epochs.append({"epoch": e + 1, "train_s": r["times"][e] if e < len(r["times"]) else float("nan"),
                               **metrics})
            from ultralytics import YOLO
            y = YOLO(str(r["ckpts"][-1]))
            net = y.model.float().eval()
            net.fuse(verbose=False)
            modules[name] = net
            rows.append({"name": name, "params": sum(p.numel() for p in net.parameters()),
                         "wall_s": r["wall_s"], "epochs": epochs})
    torch.set_num_threads(args.threads)
    ms = inference_ms(modules, args.img_size, args.rounds)
    for row in rows:
        row["ms"] = ms.get(row["name"])
        t = 0.0
        for e in row["epochs"]:
            t += e["train_s"]
            e["cum_s"] = t
        row["train_s"] = t
    budget = min(r["train_s"] for r in rows)
    command = "python benchmarks/head_to_head.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    d = data["cfg"]
    readme = Path(d.root) / "README.txt"
    textures = next((l for l in readme.read_text().splitlines() if l.startswith("textures:")), "") if readme.is_file() else ""
    lines = [f"- Command: `{command}`",
             f"- Machine: {machine_line(None, ('torch', 'ultralytics'))}; load average {load_average(1)}.",
             f"- Budget: {args.epochs} epochs, batch {args.batch}, {args.img_size} px, seed {args.seed}, "
             f"from scratch on {args.device}; data {Path(d.source).name}: {len(val)} val images"
             + (f", {args.num_train} train images ({textures})" if d.generate else "") + ".",
             f"- Scoring: detector.evaluation.COCOEvaluator (pycocotools) on the same val images for every "
             f"model, conf {CONF}, NMS IoU {IOU}, {MAX_DET} detections; train s = the training loops only "
             f"(evaluation excluded); inference = PyTorch batch 1, fused, no NMS, median of {args.rounds} "
             "alternating rounds.",
             f"- Threads: {args.threads} torch threads for every model; data loading: ours {args.workers} "
             "worker process(es), Ultralytics its CPU default (in the main process).",
             "- Training times are measured one model after another (not interleaved), so load from "
             "other processes can differ between them; inference ms are interleaved.",
             (f"- Check of the YOLO-txt copy: its val labels read back and scored as detections give AP "
              f"{sanity_ap:.3f} (1.000 = the same boxes, classes and images as the COCO ground truth)."
              if sanity_ap is not None else "- (no Ultralytics model: no YOLO-txt copy)"),
             f"- Network connections attempted: {len(NETWORK_ATTEMPTS)}"
             + (f" ({', '.join(sorted(set(NETWORK_ATTEMPTS)))}; all refused)" if NETWORK_ATTEMPTS else "") + ".",
             "", f"At equal epochs ({args.epochs}):", "",
             "| model | params (M) | AP | AP50 | AP75 | train s | inference ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        last = r["epochs"][-1] if r["epochs"] else {}
        lines.append(f"| {r['name']} | {r['params'] / 1e6:.2f} | {fmt(last.get('AP'))} | {fmt(last.get('AP50'))} | "
                     f"{fmt(last.get('AP75'))} | {r['train_s']:.0f} | {fmt(r['ms'], '.1f')} |")
    lines += ["", f"At equal wall time ({budget:.0f} s of training, the shortest model's total; each model's "
              "last epoch finished by then):", "",
              "| model | epoch | train s | AP | AP50 | AP75 |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        done = [e for e in r["epochs"] if e["cum_s"] <= budget * 1.0001]
        if not done:
            lines.append(f"| {r['name']} | 0 | - | - | - | - |")
            continue
        e = done[-1]
        lines.append(f"| {r['name']} | {e['epoch']} | {e['cum_s']:.0f} | {fmt(e.get('AP'))} | "
                     f"{fmt(e.get('AP50'))} | {fmt(e.get('AP75'))} |")
    text = "\n".join(lines) + "\n"
    (out / "head_to_head.md").write_text(text)
    (out / "head_to_head.json").write_text(json.dumps(rows, indent=1, default=str))
    print(text)
    return 0 if not NETWORK_ATTEMPTS else 1


if __name__ == "__main__":
    sys.exit(main())
