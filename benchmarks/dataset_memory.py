#!/usr/bin/env python
"""Memory of a COCO-scale dataset held by a trainer and its data loader workers.

    python benchmarks/dataset_memory.py --images 118287 --workers 4 --repeats 2

Generates (once, under ``--root``) a COCO instances JSON of ``--images`` images with about 7
boxes each (COCO train2017: 118,287 images, 860k boxes), every file a hard link to one small
photo (one copy per 60,000 links, ext4's limit), so the run measures the records and not the
pixels. Each form of the records then runs in a fresh process, the forms alternating:

* ``arrays``: what ``build_dataset`` holds (:class:`detector.data.records.RecordStore` and the
  ground truth as arrays);
* ``objects``: the same records turned into what the dataset held before (a list of
  ``ImageRecord`` objects and the ground truth as a dict of dicts), for comparison;
* ``...+thaw``: without the dataset's fork hook (:func:`detector.data.records.freeze_objects_across_fork`),
  so that a full garbage collection in a worker examines -- writes the header of -- every
  object it inherited (the interpreter's, torch's, the dataset's) and copies their pages.

Per form: the scan time (``build_dataset``), the memory of the one process holding the
dataset, then the memory of that process and its ``--workers`` data loader workers after one
full pass over every image (evaluation transform at ``--size``), read from
``/proc/<pid>/smaps_rollup``: PSS (shared pages split between the processes that map them, so
the sum is the real total) and USS (pages private to one process: what copy-on-read adds).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
COCO128 = ROOT.parent / "shared" / "data" / "coco128"
PHOTO_HW = (48, 64)


# ------------------------------------------------------------------------------ data
def generate(root: Path, n_images: int, seed: int = 0) -> Path:
    """images/ (hard links to one photo) + annotations/instances.json; reused when present."""
    import cv2
    import numpy as np

    done = root / f"done_{n_images}_{seed}"
    ann = root / "annotations" / "instances.json"
    if done.is_file():
        return ann
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    ann.parent.mkdir(parents=True, exist_ok=True)
    h, w = PHOTO_HW
    photos = sorted((COCO128 / "images" / "train2017").glob("*.jpg"))[:1]
    src = cv2.imread(str(photos[0])) if photos else None
    img = (cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA) if src is not None
           else np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))
    ok, jpeg = cv2.imencode(".jpg", img)
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 15, n_images)            # mean 7 boxes per image
    m = int(counts.sum())
    bwh = rng.uniform(4, 30, (m, 2)).round(2)
    xy = (rng.uniform(0, 1, (m, 2)) * (np.array([w, h]) - bwh)).round(2)
    cat = rng.integers(1, 81, m)
    owner = np.repeat(np.arange(1, n_images + 1), counts)
    images = []
    for i in range(n_images):
        name = f"{i + 1:012d}.jpg"
        link = img_dir / name
        if not link.exists():  # ext4 allows 65000 links to a file: one copy per 60000
            photo = root / f"photo_{i // 60000}.jpg"
            if not photo.exists():
                photo.write_bytes(jpeg.tobytes())
            os.link(photo, link)
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
    anns = [{"id": k + 1, "image_id": int(owner[k]), "category_id": int(cat[k]),
             "bbox": [float(xy[k, 0]), float(xy[k, 1]), float(bwh[k, 0]), float(bwh[k, 1])],
             "area": round(float(bwh[k, 0] * bwh[k, 1]), 2), "iscrowd": 0} for k in range(m)]
    cats = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in range(1, 81)]
    with open(ann, "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    done.write_text(f"{n_images} images, {len(anns)} boxes\n")
    return ann


# ------------------------------------------------------------------------------ measuring
def smaps(pid: int) -> dict:
    """RSS, PSS and USS (private clean + dirty) of a process in MiB."""
    kb = {}
    with open(f"/proc/{pid}/smaps_rollup", "r") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[0].endswith(":") and parts[2] == "kB":
                kb[parts[0][:-1]] = int(parts[1])
    return {"rss": kb["Rss"] / 1024, "pss": kb["Pss"] / 1024,
            "uss": (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024}


def child_pids(pid: int) -> list:
    pids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        pids.extend(int(c) for c in children)
    return sorted(set(pids))


def run_form(form: str, root: Path, workers: int, size: int, batch: int) -> dict:
    """In this (fresh) process: scan, hold, one full pass with workers; memory at each step."""
    import torch  # noqa: F401  (loaded before the baseline, as in a trainer)

    from detector.data import build_dataloader, build_dataset

    cfg = {"format": "coco", "root": str(root), "names": [],
           "train": {"images": "images", "annotations": "annotations/instances.json"}}
    if form.endswith("+thaw"):  # the fork hook undone: "before" hooks run last-registered first,
        os.register_at_fork(before=gc.unfreeze)  # so this one runs after the dataset's freeze
    gc.collect()
    base = smaps(os.getpid())
    t0 = time.perf_counter()
    ds = build_dataset(cfg, "train", size, augment=None)
    scan_s = time.perf_counter() - t0
    if form.startswith("objects"):  # what the dataset held before: Python objects per image and box
        ds.records = ds.records.tolist()
        ds._gt_dict = ds._gt_dict.to_dict()
    gc.collect()
    held = smaps(os.getpid())
    loader = build_dataloader(ds, batch, workers=workers, shuffle=True, seed=0)
    t0 = time.perf_counter()
    n, first = 0, None
    for b in loader:  # persistent workers: still alive after the pass
        n += len(b["meta"])
        if first is None:  # the workers have started and each made its first batches
            first = [smaps(p) for p in child_pids(os.getpid())]
    pass_s = time.perf_counter() - t0
    pids = child_pids(os.getpid())
    main_mem = smaps(os.getpid())
    worker_mem = [smaps(p) for p in pids]
    return {"form": form, "images": len(ds), "boxes": int(ds.records.boxes.shape[0]) if form.startswith("arrays")
            else sum(len(r.boxes) for r in ds.records), "scan_s": scan_s, "pass_s": pass_s, "seen": n,
            "base": base, "held": held, "main": main_mem, "workers": worker_mem, "first": first}


# ------------------------------------------------------------------------------ report
def versions() -> str:
    import numpy
    import torch
    try:
        import onnxruntime
        ort = onnxruntime.__version__
    except ImportError:
        ort = "not installed"
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"python {platform.python_version()}, torch {torch.__version__}, numpy {numpy.__version__}, "
            f"onnxruntime {ort}; CPU {cpu}, {os.cpu_count()} cores")


def report(results: list, workers: int) -> str:
    lines = ["| records held as | scan s | one process holding the dataset: PSS MiB (added by the "
             f"scan) | trainer + {workers} workers after a full pass: total PSS MiB | trainer PSS | "
             "per-worker USS MiB, first batch -> after the pass | pass s |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        total = r["main"]["pss"] + sum(w["pss"] for w in r["workers"])
        uss = ", ".join(f"{a['uss']:.0f} -> {b['uss']:.0f}" for a, b in zip(r["first"], r["workers"]))
        lines.append(f"| {r['form']} | {r['scan_s']:.1f} | {r['held']['pss']:.0f} "
                     f"(+{r['held']['pss'] - r['base']['pss']:.0f}) | {total:.0f} | {r['main']['pss']:.0f} | "
                     f"{uss} | {r['pass_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=118287, help="images in the generated JSON (COCO train2017: 118287)")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--size", type=int, default=64, help="input size of the pass (small: records, not pixels)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--forms", nargs="+", default=["arrays", "objects"], choices=("arrays", "objects", "arrays+thaw", "objects+thaw"))
    ap.add_argument("--repeats", type=int, default=2, help="runs of each form, alternating")
    ap.add_argument("--root", default=None, help="where the generated data goes (default: a folder in $TMPDIR)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    root = Path(args.root or Path(tempfile.gettempdir()) / f"cspdet_coco_memory_{args.images}")
    if args.child:
        print("RESULT " + json.dumps(run_form(args.child, root, args.workers, args.size, args.batch)))
        return 0
    t0 = time.perf_counter()
    ann = generate(root, args.images)
    size_mb = ann.stat().st_size / 2 ** 20
    print(f"# {versions()}")
    print(f"# data: {ann} ({size_mb:.0f} MiB; generated or found in {time.perf_counter() - t0:.0f} s)")
    with open(ann, "rb") as f:  # the first run must not pay for a cold file cache
        f.read()
    for p in (root / "images").iterdir():
        p.stat()
    results = []
    for form in [f for _ in range(args.repeats) for f in args.forms]:  # alternating
        cmd = [sys.executable, __file__, "--child", form, "--images", str(args.images), "--workers",
               str(args.workers), "--size", str(args.size), "--batch", str(args.batch), "--root", str(root)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
        if out.returncode or not line:
            print(out.stdout[-2000:], out.stderr[-4000:], file=sys.stderr)
            return 1
        r = json.loads(line[0][len("RESULT "):])
        print(f"# {form}: {r['images']} images, {r['boxes']} boxes, {r['seen']} items in the pass")
        results.append(r)
    print(report(results, args.workers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
