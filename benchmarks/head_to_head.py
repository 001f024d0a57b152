#!/usr/bin/env python
"""Ours against Ultralytics YOLO11n / YOLOv8n / YOLO26n, trained from scratch on the same images.

    python benchmarks/head_to_head.py                                  # proxy set, 160 px, 3 epochs
    python benchmarks/head_to_head.py --data configs/data/bccd.yaml    # real photos, 2-core budget
    python benchmarks/head_to_head.py --epochs 10 --img-size 320 --num-train 2000 --device cuda
    python benchmarks/head_to_head.py --models ours yolo11n --data configs/data/shapes.yaml

The table of issue 23 (BCCD; ours and YOLO11n with 3 seeds, the other peers with one; hours on
2 cores, one run at a time, so start it early in the background)::

    python benchmarks/head_to_head.py --data configs/data/bccd.yaml --img-size 416 --epochs 60 \\
        --batch 8 --models ours yolo11n yolov8n yolo26n --seeds 0 1 2 \\
        --peer-seeds yolov8n=0 yolo26n=0 --out /tmp/h2h_bccd --no-progress

Data: any data YAML (COCO JSON, YOLO txt, Pascal VOC; generated sets are made on first use).
Ours trains on it as it is; Ultralytics on a YOLO-txt copy of the same splits written by
:func:`detector.data.convert.convert_dataset` (hard-linked images) with the Ultralytics data
yaml it reads (``path``, ``train``, ``val``, ``test``, ``names``). Without ``--img-size`` /
``--epochs`` / ``--batch`` the budget is the data's (``DATA_BUDGETS``: BCCD 320 px, 30 epochs,
batch 8, about 15 minutes a run on 2 cores; other data 160 px, 3 epochs, batch 8).

Every model trains with the same epochs, batch, input size and torch threads, from random
weights, each with its own default recipe otherwise; ``--seeds`` runs each model once per seed
(``--peer-seeds NAME=S,S`` gives a peer its own seeds), one run at a time. Every model is scored
by the same code: our ``detector.evaluation.COCOEvaluator`` (pycocotools), conf 0.001, NMS IoU
0.6, 300 detections, on the val split after every epoch and on the test split (when the data has
one) at the epochs the table reports; Ultralytics' predictions are converted to COCO results
(original-image pixels, our category ids).

Reported, each metric as the mean over seeds with its min-max: AP, AP50, AP75 on val and test at
equal epochs (the last epoch; ours also at its best-val epoch, the checkpoint ``best.pt``
holds), at equal wall time (each run's last epoch finished within the shortest run's total
training time), per-class AP50 on test (val without a test split) at the last epoch, training
time (the training loops only; evaluation excluded) and PyTorch inference ms (batch 1, fused,
no NMS, the models timed in alternating rounds).

Nothing is downloaded: Ultralytics models are built from their yaml files, plots and AMP checks
are off, ``YOLO_OFFLINE=1`` is set and every network connection is refused and counted (the
count is printed; it must be 0, else the exit status is 1).
"""
from __future__ import annotations

import argparse
import contextlib
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
from typing import Dict, Iterator, List, Optional, Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ["YOLO_OFFLINE"] = "1"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"  # albumentations checks PyPI for updates on import
os.environ.setdefault("YOLO_VERBOSE", "False")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PEERS = {"yolo11n": "yolo11n.yaml", "yolov8n": "yolov8n.yaml", "yolo26n": "yolo26n.yaml"}
CONF, IOU, MAX_DET = 0.001, 0.6, 300
METRICS = ("AP", "AP50", "AP75")
# the default budget per data YAML (by file stem); others get GENERIC_BUDGET
DATA_BUDGETS = {"bccd": {"img_size": 320, "epochs": 30, "batch": 8}}
GENERIC_BUDGET = {"img_size": 160, "epochs": 3, "batch": 8}

# ----------------------------------------------------------------- no network, counted
NETWORK_ATTEMPTS: List[str] = []


@contextlib.contextmanager
def no_network() -> Iterator[None]:
    """Refuse (and record in ``NETWORK_ATTEMPTS``) every internet connection in the block."""
    connect = socket.socket.connect

    def refuse(self, address, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            import traceback
            frames = [f for f in traceback.extract_stack()[:-1] if "site-packages" in f.filename]
            where = (f" from {frames[-1].filename.split('site-packages/')[-1]}:{frames[-1].lineno}"
                     if frames else "")
            NETWORK_ATTEMPTS.append(f"{address}{where}")
            raise OSError(f"head_to_head: network access refused ({address})")
        return connect(self, address, *args, **kwargs)

    socket.socket.connect = refuse
    try:
        yield
    finally:
        socket.socket.connect = connect


# ----------------------------------------------------------------- data
def prepare(args) -> dict:
    """The data config (a dict, and loaded) with the budget's split sizes for generated sets
    (made on first use); ``splits``: the scored splits (val, and test when there is one)."""
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
    splits = ["val"] + (["test"] if cfg.test is not None else [])
    return {"dict": data, "cfg": cfg, "splits": splits}


def write_ultralytics_layout(cfg, out: Path) -> Path:
    """The data's splits as YOLO txt (:func:`~detector.data.convert.convert_dataset`) and the
    data yaml Ultralytics reads; returns that yaml."""
    import yaml

    from detector.data.convert import convert_dataset

    result = convert_dataset(cfg, "yolo", out, splits=[s for s in ("train", "val", "test") if getattr(cfg, s)])
    doc = {"path": str(out), **{s: f"images/{s}" for s in result.images},
           "names": {i: n for i, n in enumerate(cfg.names)}}
    data_yaml = out / "ultralytics.yaml"
    data_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
    return data_yaml


def image_paths(dataset) -> Dict[int, str]:
    """Image id -> file of a split (the files our scoring reads, for Ultralytics to predict on)."""
    records = dataset.records
    return {int(records.image_ids[i]): str(records.paths[i]) for i in range(len(records))}


def yolo_labels_as_detections(dataset, labels_dir: Path) -> float:
    """AP of a split's YOLO-txt labels read back as detections (score 1): 1.0 when the layout
    Ultralytics trains on and our scoring path agree (boxes, classes, image ids)."""
    import numpy as np

    from detector.evaluation import COCOEvaluator

    coco = dataset.coco_gt()
    evaluator = COCOEvaluator(coco, dataset.label_to_cat_id, dataset.names)
    labels = {p.stem: p for p in labels_dir.rglob("*.txt")}
    for image_id, path in image_paths(dataset).items():
        im = coco.imgs[image_id]
        rows = np.loadtxt(labels[Path(path).stem], ndmin=2).reshape(-1, 5)
        w, h = im["width"], im["height"]
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
        evaluator.update([{"boxes": boxes, "scores": np.ones(len(rows)), "labels": rows[:, 0].astype(np.int64)}],
                         [{"image_id": image_id}], letterboxed=False)
    return float(evaluator.summarize()["AP"])


def split_datasets(data: dict, splits: Sequence[str], size: int) -> dict:
    from detector.data import build_dataset

    return {s: build_dataset(copy.deepcopy(data), s, size, augment=None) for s in splits}


def scores(metrics: dict) -> dict:
    """AP, AP50, AP75 and per-class AP50 of an evaluator's summary."""
    return {**{k: float(metrics[k]) for k in METRICS},
            "per_class": {r["name"]: float(r["AP50"]) for r in metrics.get("per_class") or []}}


# ----------------------------------------------------------------- ours
def snapshot_trainer():
    """Our Trainer, also keeping each epoch's EMA weights (what ``best.pt`` holds) as
    ``epochs/epochN.pt``: the equal-wall-time row scores an epoch chosen after every run."""
    from detector.engine.checkpoint import save_checkpoint
    from detector.engine.trainer import Trainer

    class SnapshotTrainer(Trainer):
        def save_last(self, epoch: int, batch: int) -> None:
            super().save_last(epoch, batch)
            if self.main and batch == 0:
                state = self._state(epoch, 0, full=False)
                if self.ema is not None:
                    state.pop("model")
                (self.run_dir / "epochs").mkdir(exist_ok=True)
                save_checkpoint(state, self.run_dir / "epochs" / f"epoch{epoch}.pt")
    return SnapshotTrainer


def train_ours(args, data: dict, out: Path, seed: int) -> dict:
    from detector.config import load_config
    from detector.models.detector import resolve_backbone_config

    cfg = load_config(str(ROOT / args.config))
    cfg.pop("_source", None)
    cfg["model"]["backbone"] = resolve_backbone_config(cfg["model"]["backbone"])
    cfg["data"] = copy.deepcopy(data)
    cfg["train"].update(name=f"ours-s{seed}", save_dir=str(out), exist_ok=True, epochs=args.epochs,
                        batch_size=args.batch, img_size=args.img_size, workers=args.workers,
                        seed=seed, device=args.device, threads=args.threads, plots=False,
                        tensorboard=False)
    cfg["eval"].update(img_size=args.img_size, interval=1, conf_thres=CONF, iou_thres=IOU, max_det=MAX_DET)
    t0 = time.perf_counter()
    result = snapshot_trainer()(cfg, progress=not args.no_progress).train()
    wall = time.perf_counter() - t0
    run_dir = Path(result["run_dir"])
    epochs = []
    with open(run_dir / "results.csv", newline="") as f:
        for row in csv.DictReader(f):
            e = int(row["epoch"])
            epochs.append({"epoch": e, "train_s": float(row["epoch_time_s"]),
                           "ckpt": str(run_dir / "epochs" / f"epoch{e}.pt"),
                           "val": {k: float(row[k]) for k in METRICS if row.get(k) not in (None, "")}})
    return {"model": f"ours ({Path(args.config).stem})", "kind": "ours", "seed": seed, "wall_s": wall,
            "epochs": epochs, "last_ckpt": str(run_dir / "last.pt")}


def score_ours(ckpt: str, dataset, args) -> dict:
    """COCO metrics of one of our checkpoints on ``dataset``, by the same evaluator."""
    from detector.data import build_dataloader
    from detector.evaluation import evaluate
    from detector.inference import load_detector

    loader = build_dataloader(dataset, args.batch, workers=0, shuffle=False)
    model = load_detector(ckpt).model
    return scores(evaluate(model, loader, CONF, IOU, MAX_DET, device=args.device, progress=False))


# ----------------------------------------------------------------- Ultralytics
def train_peer(name: str, args, data_yaml: Path, out: Path, seed: int) -> dict:
    import ultralytics.utils.torch_utils as torch_utils
    from ultralytics import YOLO

    # Ultralytics trains on cpu_count - 1 threads (1 on a 2-core box); give it what ours has
    torch_utils.NUM_THREADS = args.threads

    model = YOLO(PEERS[name])  # built from the yaml: random weights, nothing downloaded
    marks: Dict[str, list] = {"start": [], "end": []}
    model.add_callback("on_train_epoch_start", lambda tr: marks["start"].append(time.perf_counter()))
    model.add_callback("on_train_epoch_end", lambda tr: marks["end"].append(time.perf_counter()))
    run_name = f"{name}-s{seed}"
    t0 = time.perf_counter()
    model.train(data=str(data_yaml), epochs=args.epochs, batch=args.batch, imgsz=args.img_size,
                device=args.device or "cpu", workers=args.workers, seed=seed, pretrained=False,
                amp=False if (args.device or "cpu") == "cpu" else True, plots=False, val=False,
                save_period=1, project=str(out), name=run_name, exist_ok=True, verbose=False)
    wall = time.perf_counter() - t0
    wdir = out / run_name / "weights"
    ckpts = sorted(wdir.glob("epoch*.pt"), key=lambda p: int(p.stem[5:]))
    # epoch numbering of save_period files: 0- or 1-based depending on the version; the last
    # epoch is last.pt either way
    per_epoch = [str(p) for p in ckpts][: args.epochs - 1] + [str(wdir / "last.pt")]
    per_epoch = [None] * (args.epochs - len(per_epoch)) + per_epoch
    times = [e - s for s, e in zip(marks["start"], marks["end"])]
    epochs = [{"epoch": e + 1, "train_s": times[e] if e < len(times) else float("nan"), "ckpt": c}
              for e, c in enumerate(per_epoch)]
    return {"model": name, "kind": "peer", "seed": seed, "wall_s": wall, "epochs": epochs,
            "last_ckpt": per_epoch[-1]}


def score_peer(ckpt: Optional[str], dataset, args) -> dict:
    """COCO metrics of an Ultralytics checkpoint on ``dataset``, scored by our evaluator."""
    import numpy as np
    from ultralytics import YOLO

    from detector.evaluation import COCOEvaluator

    if not ckpt:
        return {}
    evaluator = COCOEvaluator(dataset.coco_gt(), dataset.label_to_cat_id, dataset.names)
    model = YOLO(ckpt)
    items = sorted(image_paths(dataset).items())
    for i in range(0, len(items), 16):
        chunk = items[i:i + 16]
        results = model.predict([p for _, p in chunk], imgsz=args.img_size, conf=CONF, iou=IOU,
                                max_det=MAX_DET, device=args.device or "cpu", verbose=False)
        preds = [{"boxes": r.boxes.xyxy.cpu().numpy().astype(np.float64), "scores": r.boxes.conf.cpu().numpy(),
                  "labels": r.boxes.cls.cpu().numpy().astype(np.int64)} for r in results]
        evaluator.update(preds, [{"image_id": image_id} for image_id, _ in chunk], letterboxed=False)
    return scores(evaluator.summarize())


def score(run: dict, ckpt: Optional[str], dataset, args) -> dict:
    return (score_ours if run["kind"] == "ours" else score_peer)(ckpt, dataset, args) if ckpt else {}


# ----------------------------------------------------------------- the runs
def seeds_of(args) -> Dict[str, List[int]]:
    """Each model's seeds: ``--seeds`` (default ``--seed``), a peer's own from ``--peer-seeds``."""
    base = list(args.seeds if args.seeds is not None else [args.seed])
    own = {}
    for item in args.peer_seeds:
        name, _, values = item.partition("=")
        if name not in PEERS or not values:
            raise ValueError(f"--peer-seeds takes NAME=S[,S...] with NAME one of {', '.join(PEERS)}; got '{item}'")
        own[name] = [int(v) for v in values.split(",")]
    return {m: own.get(m, base) for m in args.models}


def train_all(args, data: dict, out: Path, datasets: dict) -> List[dict]:
    """Every model at each of its seeds, one run at a time (ours first: Ultralytics changes
    process-wide settings when imported); val scored after every epoch."""
    seeds = seeds_of(args)
    runs = [train_ours(args, data["dict"], out, s) for s in seeds.get("ours", [])]
    peers = [m for m in args.models if m != "ours"]
    if peers:
        data_yaml = write_ultralytics_layout(data["cfg"], out / "yolo_data")
        data["sanity"] = {s: yolo_labels_as_detections(datasets[s], out / "yolo_data" / "labels" / s)
                          for s in datasets}
        for name in peers:
            for seed in seeds[name]:
                run = train_peer(name, args, data_yaml, out, seed)
                for e in run["epochs"]:
                    e["val"] = {k: v for k, v in score_peer(e["ckpt"], datasets["val"], args).items()
                                if k in METRICS}
                runs.append(run)
    return runs


def pick_epochs(runs: List[dict]) -> float:
    """Each run's cumulative train time per epoch, and its last / best-val / equal-wall-time
    epochs (indices); returns the equal-wall-time budget (the shortest run's total)."""
    for run in runs:
        t = 0.0
        for e in run["epochs"]:
            t += e["train_s"]
            e["cum_s"] = t
        run["train_s"] = t
    budget = min(r["train_s"] for r in runs)
    for run in runs:
        eps = run["epochs"]
        run["last"] = len(eps) - 1
        run["best"] = max(range(len(eps)), key=lambda i: eps[i]["val"].get("AP", -1.0))
        done = [i for i, e in enumerate(eps) if e["cum_s"] <= budget * 1.0001]
        run["equal_wall"] = done[-1] if done else None
    return budget


def score_chosen(runs: List[dict], datasets: dict, args) -> None:
    """Test scores (and per-class AP50) at each run's chosen epochs; val per class at the last."""
    for run in runs:
        for key in ("last", "best", "equal_wall"):
            i = run[key]
            if i is None or (key == "best" and run["kind"] != "ours"):
                continue
            e = run["epochs"][i]
            if "test" in datasets and "test" not in e:
                e["test"] = score(run, e["ckpt"], datasets["test"], args)
        last = run["epochs"][run["last"]]
        if "test" not in datasets:  # per-class AP50 from val then
            last["val"] = score(run, last["ckpt"], datasets["val"], args)


def prune_snapshots(runs: List[dict], keep: bool) -> None:
    """Delete the per-epoch weights no table row needs (they add up to GBs at 60 epochs)."""
    if keep:
        return
    for run in runs:
        needed = {run["epochs"][run[k]]["ckpt"] for k in ("last", "best", "equal_wall") if run[k] is not None}
        for e in run["epochs"]:
            if e["ckpt"] and e["ckpt"] not in needed and e["ckpt"] != run["last_ckpt"]:
                Path(e["ckpt"]).unlink(missing_ok=True)
                e["ckpt"] = None


# ----------------------------------------------------------------- inference timing
def deployed_module(run: dict):
    if run["kind"] == "ours":
        from detector.inference import Predictor
        return Predictor(run["last_ckpt"], fuse=True).model
    from ultralytics import YOLO
    net = YOLO(run["last_ckpt"]).model.float().eval()
    net.fuse(verbose=False)
    return net


def inference_ms(modules: Dict[str, object], size: int, rounds: int) -> Dict[str, float]:
    """Median PyTorch ms at batch 1, the models alternating call by call."""
    import torch

    from detector.inference.backends import torch_forward_fn

    x = torch.zeros(1, 3, size, size)
    runners = {k: torch_forward_fn(m, x) for k, m in modules.items()}
    samples = {k: [] for k in runners}
    for run in runners.values():
        for _ in range(3):
            run()
    for _ in range(rounds):
        for k, run in runners.items():
            t0 = time.perf_counter()
            run()
            samples[k].append(time.perf_counter() - t0)
    return {k: 1000 * statistics.median(v) for k, v in samples.items()}


# ----------------------------------------------------------------- the table
def fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def mean_range(values: Sequence[Optional[float]], spec: str = ".3f") -> str:
    """``mean (min-max)`` over seeds; one value as it is; ``-`` for none."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return format(vals[0], spec)
    return f"{format(statistics.mean(vals), spec)} ({format(min(vals), spec)}-{format(max(vals), spec)})"


def groups(runs: List[dict]) -> Dict[str, List[dict]]:
    out: Dict[str, List[dict]] = {}
    for r in runs:
        out.setdefault(r["model"], []).append(r)
    return out


def metric_rows(runs: List[dict], splits: Sequence[str], key: str, label=lambda name, rs: name) -> List[str]:
    """One row per model and split at each run's epoch ``key``: seeds, epochs, AP / AP50 / AP75,
    train s (to that epoch) as mean (min-max)."""
    lines = []
    for name, rs in groups(runs).items():
        chosen = [r["epochs"][r[key]] if r[key] is not None else None for r in rs]
        for split in splits:
            cells = [mean_range([(e or {}).get(split, {}).get(k) for e in chosen]) for k in METRICS]
            epochs = ", ".join(str(e["epoch"]) if e else "-" for e in chosen)
            lines.append(f"| {label(name, rs)} | {split} | {', '.join(str(r['seed']) for r in rs)} | {epochs} | "
                         + " | ".join(cells) + f" | {mean_range([e['cum_s'] if e else None for e in chosen], '.0f')} |")
    return lines


def per_class_rows(runs: List[dict], split: str, names: Sequence[str]) -> List[str]:
    lines = []
    for name, rs in groups(runs).items():
        per = [r["epochs"][r["last"]].get(split, {}).get("per_class", {}) for r in rs]
        lines.append(f"| {name} | " + " | ".join(mean_range([p.get(c) for p in per]) for c in names) + " |")
    return lines


def notes(args, data: dict, datasets: dict, budget: float, argv) -> List[str]:
    from detector.benchmark.machine import load_average, machine_line

    command = "python benchmarks/head_to_head.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    d = data["cfg"]
    sizes = ", ".join(f"{len(ds)} {s}" for s, ds in datasets.items())
    sanity = data.get("sanity")
    return [f"- Command: `{command}`",
            f"- Machine: {machine_line(None, ('torch', 'ultralytics'))}; load average {load_average(1)}.",
            f"- Budget: {args.epochs} epochs, batch {args.batch}, {args.img_size} px, from scratch on "
            f"{args.device}; seeds per model: " + "; ".join(f"{m} {s}" for m, s in seeds_of(args).items())
            + f"; data {Path(d.source).name} ({d.format}): {sizes} images scored.",
            f"- Scoring: detector.evaluation.COCOEvaluator (pycocotools) on the same images for every model, "
            f"conf {CONF}, NMS IoU {IOU}, {MAX_DET} detections; each metric: mean over seeds (min-max); "
            "train s = the training loops only (evaluation excluded).",
            f"- Threads: {args.threads} torch threads for every model; data loading: ours {args.workers} "
            "worker process(es), Ultralytics its CPU default. Runs one after another (not interleaved).",
            (f"- Check of the YOLO-txt copy: its labels read back and scored as detections give AP "
             + ", ".join(f"{s} {v:.3f}" for s, v in sanity.items()) + " (1.000 = the same boxes, classes and images)."
             if sanity else "- (no Ultralytics model: no YOLO-txt copy)"),
            f"- Equal wall time: {budget:.0f} s of training (the shortest run's total).",
            f"- Network connections attempted: {len(NETWORK_ATTEMPTS)}"
            + (f" ({', '.join(sorted(set(NETWORK_ATTEMPTS)))}; all refused)" if NETWORK_ATTEMPTS else "") + "."]


def markdown(args, data: dict, datasets: dict, runs: List[dict], budget: float, ms: dict, argv) -> str:
    splits = list(datasets)
    head = "| model | split | seeds | epoch | AP | AP50 | AP75 | train s |\n|---|---|---|---|---:|---:|---:|---:|"
    lines = notes(args, data, datasets, budget, argv)
    lines += ["", f"At equal epochs ({args.epochs}; ours also at its best-val epoch):", "", head]
    lines += metric_rows(runs, splits, "last")
    lines += metric_rows([r for r in runs if r["kind"] == "ours"], splits, "best",
                         label=lambda name, rs: f"{name} best val")
    lines += ["", f"At equal wall time ({budget:.0f} s of training; each run's last epoch finished by then):",
              "", head]
    lines += metric_rows(runs, splits, "equal_wall")
    split = "test" if "test" in datasets else "val"
    names = list(datasets[split].names)
    lines += ["", f"Per-class AP50 on {split} at the last epoch:", "",
              "| model | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += per_class_rows(runs, split, names)
    lines += ["", "| model | params (M) | inference ms |", "|---|---:|---:|"]
    lines += [f"| {name} | {rs[0]['params'] / 1e6:.2f} | {fmt(ms.get(name), '.1f')} |"
              for name, rs in groups(runs).items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="configs/data/proxy.yaml")
    p.add_argument("--config", default="configs/csppelee_efm_sam.yaml", help="our model")
    p.add_argument("--models", nargs="+", default=["ours", "yolo11n", "yolov8n", "yolo26n"])
    p.add_argument("--epochs", type=int, help="default: the data's budget (module docstring)")
    p.add_argument("--batch", type=int, help="default: the data's budget")
    p.add_argument("--img-size", type=int, help="default: the data's budget")
    p.add_argument("--num-train", type=int, default=320, help="generated sets: train images")
    p.add_argument("--num-val", type=int, default=100, help="generated sets: val images")
    p.add_argument("--gen-size", type=int, default=0, help="generated sets: image size (0 = --img-size)")
    p.add_argument("--workers", type=int, default=1, help="our data-loading processes")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch threads, every model")
    p.add_argument("--seed", type=int, default=0, help="the seed of every run (one run per model)")
    p.add_argument("--seeds", type=int, nargs="+", help="one run per seed and model (overrides --seed)")
    p.add_argument("--peer-seeds", nargs="*", default=[], metavar="NAME=S,S",
                   help="a peer's own seeds, e.g. yolov8n=0 yolo26n=0 (others: --seeds)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=int, default=30, help="timed inference rounds")
    p.add_argument("--out", default="runs/head_to_head")
    p.add_argument("--keep-epochs", action="store_true", help="keep every epoch's weights (default: "
                                                              "only those the table scores)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    stem = Path(args.data).stem
    for key, value in DATA_BUDGETS.get(stem, GENERIC_BUDGET).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = [m for m in args.models if m != "ours" and m not in PEERS]
    if unknown:
        p.error(f"unknown models {unknown}; choose from ours, {', '.join(PEERS)}")
    try:
        seeds_of(args)
    except ValueError as e:
        p.error(str(e))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import logging
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with no_network():
        data = prepare(args)
        datasets = split_datasets(data["dict"], data["splits"], args.img_size)
        runs = train_all(args, data, out, datasets)
        budget = pick_epochs(runs)
        score_chosen(runs, datasets, args)
        prune_snapshots(runs, args.keep_epochs)
        torch.set_num_threads(args.threads)
        modules = {}
        for name, rs in groups(runs).items():
            modules[name] = deployed_module(rs[0])
            for r in rs:
                r["params"] = sum(p.numel() for p in modules[name].parameters())
        ms = inference_ms(modules, args.img_size, args.rounds)
    text = markdown(args, data, datasets, runs, budget, ms, argv)
    (out / "head_to_head.md").write_text(text)
    (out / "head_to_head.json").write_text(json.dumps(runs, indent=1, default=str))
    print(text)
    return 0 if not NETWORK_ATTEMPTS else 1


if __name__ == "__main__":
    sys.exit(main())
