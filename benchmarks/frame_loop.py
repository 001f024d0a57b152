#!/usr/bin/env python
"""Where a demo frame's time goes: the model in the loop against the model alone.

    python benchmarks/frame_loop.py --weights runs/csppelee_efm_sam/best_320.onnx
    python benchmarks/frame_loop.py --weights best_320.onnx best_320_raw.onnx best_320_int8.onnx best.pt
    python benchmarks/frame_loop.py --weights best_320.onnx --source video.mp4 --frames 300

Each weights file runs through the demo's own loop (``detector.cli.demo.run``: reader thread,
Predictor, drawing; headless, nothing saved) over ``--frames`` frames of a video, and then its
network alone, back to back, on one of those frames, for the same number of runs. The two
alternate for ``--rounds`` rounds, so both see the same machine state. Printed per file, as
medians per frame with the min-max over rounds: waiting for the reader, pre-processing, model,
post-processing (confidence filter, NMS, mapping boxes back), drawing; the model in the loop
divided by the model alone; and the whole-loop FPS (frames / wall time of the loop).
A third timing runs the network alone again, each run preceded (untimed, in the same thread) by
the loop's own work on a frame: it separates what that work costs the next network run by
itself (caches, ORT threads gone idle) from the rest (the reader thread beside it, ...).

Without ``--source`` the video is made here: the val images of ``--data`` (default: the
generated shapes set) resized to ``--frame-size`` and written with OpenCV (mp4v), so the
reader decodes a real compressed video as it would a camera clip.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from detector.cli import demo  # noqa: E402

PARTS = demo.PARTS  # the demo loop's timed parts, in its order


def make_video(data: str, path: Path, frames: int, size) -> Path:
    """``frames`` val images of ``data`` (repeated if fewer), resized to ``size`` (w, h), as mp4."""
    import cv2

    from detector.data import check_split_exists, prepare_data
    from detector.data.labels import list_images

    images = list_images(Path(check_split_exists(prepare_data(data), "val").images))
    if not images:
        raise SystemExit(f"error: no val images in {data}")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, tuple(size))
    if not writer.isOpened():
        raise SystemExit("error: this OpenCV cannot write mp4v video; pass --source")
    for i in range(frames):
        img = cv2.imread(str(images[i % len(images)]), cv2.IMREAD_COLOR)
        writer.write(cv2.resize(img, tuple(size), interpolation=cv2.INTER_LINEAR))
    writer.release()
    return path


def frame_work(predictor, source: str):
    """The loop's own work on a frame, without the network and in the same thread: decode the
    next video frame, pre-process it, draw the FPS text on it. Run before each network run,
    untimed, it leaves the caches as the loop leaves them, with no other thread at work."""
    import cv2

    cap = cv2.VideoCapture(source)
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def work():
        ok, frame = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = cap.read()
            if not ok:
                raise SystemExit(f"error: cannot read frames from {source} again")
        predictor.preprocess([frame])
        demo.draw(frame, *empty, predictor.names, fps=100.0)
    return work, cap


def model_alone(predictor, frame: np.ndarray, runs: int, before=None) -> float:
    """Median ms of what the loop's ``model`` part times, alone: the network and, for a raw
    export or a checkpoint, the PyTorch decoding that follows it; ``before()`` (untimed) runs
    ahead of each run."""
    import torch

    x, _ = predictor.preprocess([frame])
    if predictor.backend != "pytorch":  # an exported file (ONNX Runtime, OpenVINO)
        net = predictor.model

        def forward():
            net.run(x) if net.has_nms else net.decoded(x)
    else:
        def forward():
            with torch.inference_mode():
                predictor.model.decode(predictor.model(x))
    forward()
    samples = []
    for _ in range(runs):
        if before is not None:
            before()
        t0 = time.perf_counter()
        forward()
        samples.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(samples))


def measure(weights: str, source: str, frames: int, rounds: int, threads, conf: float):
    """Per round: the demo loop's part medians, its FPS, the model alone and the model after
    the loop's frame work (:func:`frame_work`); and the backend."""
    import cv2

    cap = cv2.VideoCapture(source)
    ok, frame = cap.read()
    cap.release()
    if not ok:
        raise SystemExit(f"error: cannot read a frame from {source}")
    out: Dict[str, List[float]] = {k: [] for k in (*PARTS, "fps", "alone", "after_work")}
    backend = None
    for _ in range(rounds):
        args = demo.parse_args(["--weights", weights, "--source", source, "--no-show", "--max-frames",
                                str(frames), "--conf-thres", str(conf)]
                               + (["--threads", str(threads)] if threads else []))
        stats = demo.run(args)
        for k in PARTS:
            out[k].append(stats["timing"][k])
        out["fps"].append(stats["mean_fps"])
        out["alone"].append(model_alone(stats["predictor"], frame, frames))
        work, work_cap = frame_work(stats["predictor"], source)
        out["after_work"].append(model_alone(stats["predictor"], frame, frames, before=work))
        work_cap.release()
        backend = stats["backend"]
    return out, backend


def spread(values: List[float], spec: str = ".2f") -> str:
    return f"{np.median(values):{spec}} ({min(values):{spec}}-{max(values):{spec}})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", nargs="+", required=True, help=".onnx / .pt / config files to time")
    ap.add_argument("--source", default=None, help="video file (default: one made from --data's val images)")
    ap.add_argument("--data", default="configs/data/shapes.yaml", help="data YAML whose val images make the video")
    ap.add_argument("--frame-size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    ap.add_argument("--frames", type=int, default=200, help="frames per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of loop + model alone")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (0 = its default)")
    ap.add_argument("--conf-thres", type=float, default=0.25, help="the demo's score threshold")
    args = ap.parse_args(argv)

    import logging

    import cv2
    import torch

    from detector.benchmark.machine import load_line, machine_line

    logging.disable(logging.INFO)  # the demo's per-run log lines
    torch.set_num_threads(max(1, args.threads or os.cpu_count()))
    missing = [w for w in args.weights if not Path(w).exists()]
    if missing:
        print(f"error: weights not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    load_before = load_line()
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source or str(make_video(args.data, Path(tmp) / "clip.mp4", args.frames, args.frame_size))
        w, h = (int(cv2.VideoCapture(source).get(p)) for p in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
        results = {wt: measure(wt, source, args.frames, args.rounds, args.threads, args.conf_thres)
                   for wt in args.weights}
    print("```")
    print("python benchmarks/frame_loop.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    print(f"# {machine_line(args.threads)}")
    print(f"# {load_before} before, {load_line()} after")
    print(f"# source: {args.source or f'{args.frames} val images of {args.data} as mp4v'} at {w}x{h}; "
          f"{args.frames} frames x {args.rounds} rounds per file; conf {args.conf_thres}")
    print("```")
    print()
    print("| weights | backend | read | pre | model | post | draw | pre + post | model alone | "
          "in loop / alone | after frame work / alone | in loop / after frame work | loop FPS | "
          "loop's own cost (ms) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for wt, (r, backend) in results.items():
        around = [p + q for p, q in zip(r["pre"], r["post"])]
        ratio = [m / a for m, a in zip(r["model"], r["alone"])]
        after_vs_alone = [w / a for w, a in zip(r["after_work"], r["alone"])]
        loop_vs_after = [m / w for m, w in zip(r["model"], r["after_work"])]
        own = [1000.0 / f - a for f, a in zip(r["fps"], r["alone"])]  # a loop frame minus the network alone
        print(f"| {Path(wt).name} | {backend} | " + " | ".join(spread(r[k]) for k in PARTS)
              + f" | {spread(around)} | {spread(r['alone'])} | {spread(ratio)}x | {spread(after_vs_alone)}x "
              f"| {spread(loop_vs_after)}x | {spread(r['fps'], '.1f')} | {spread(own)} |")
    print()
    print("ms per frame, median over the round's frames; median (min-max) over rounds. read = waiting "
          "for the reader thread; post = confidence filter + NMS + boxes mapped back; draw = boxes "
          "and FPS text; model alone = the same network back to back on one of the frames; after "
          "frame work = the same, each run preceded (untimed, same thread) by decoding, "
          "pre-processing and drawing a frame. after frame work / alone is what that work costs "
          "the next network run by itself (caches, idle ORT threads); in loop / after frame work "
          "is the rest (the reader thread beside it, post-processing, the loop). loop's own cost = "
          "a whole-loop frame (1000 / loop FPS) minus the network alone: what the demo adds to the model.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
