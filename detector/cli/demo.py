#!/usr/bin/env python
"""Live detection demo: webcam, video file, image, image folder or network stream.

    python tools/demo.py --weights runs/csppelee_efm_sam/best.pt --source 0          # webcam 0
    python tools/demo.py --weights best_320.onnx --source video.mp4 --save            # ONNX Runtime
    python tools/demo.py --weights best.pt --source images/ --no-show --save          # headless
    python tools/demo.py --weights best.pt --source rtsp://user:pass@camera/stream
    python tools/demo.py --weights best.pt --source video.mp4 --track --save-json     # ids per object

A window shows boxes, class names, scores and FPS; q or Esc quits (for images, any other key
shows the next one). Frames are read in a background thread, so inference never waits on the
camera; live sources keep only the newest frame. --save writes the annotated video or images to
runs/demo/. The window needs an OpenCV build with GUI support (see the message if yours has none).
A dropped stream is reopened with back-off (--reconnect); bad video frames are skipped and counted.
--track: an id per object (pip install cspdet[track]); --save-json: each frame's boxes (and ids).
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from detector.data.frames import FrameIOError, FrameReader, FrameWriter, ReconnectPolicy
from detector.drawing import draw_frame as draw  # demo.draw: benchmarks/frame_loop.py draws with it too
from detector.inference import Predictor
from detector.inference.results import JsonLinesWriter
from detector.inference.tracking import Tracker, TrackingUnavailableError

log = logging.getLogger("demo")
HEADLESS_HELP = (
    "this OpenCV build has no GUI support (GUI: NONE in cv2.getBuildInformation()), so it cannot "
    "open a window. This usually means opencv-python-headless (a dependency of albumentations) "
    "was installed over opencv-python. Put the GUI build back with\n"
    '    pip install --no-deps --force-reinstall "opencv-python>=4.9"\n'
    "or run without a window: --no-show (add --save to keep the annotated output).")


class DemoError(RuntimeError):
    """A problem the user can fix (no GUI, no display); printed without a traceback. A source
    that cannot be read raises :class:`~detector.data.frames.FrameIOError`."""


# --------------------------------------------------------------------------- environment

def opencv_gui_backend() -> str:
    """The GUI backend OpenCV was built with (``QT5``, ``GTK3``, ``WIN32UI``...) or ``NONE``."""
    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return match.group(1).upper() if match else "NONE"


def check_can_show() -> None:
    """Refuse early (instead of a crash inside imshow) when no window can be opened."""
    if opencv_gui_backend() == "NONE":
        raise DemoError(HEADLESS_HELP)
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise DemoError("no display found (DISPLAY is not set): run with --no-show (and --save), "
                        "or forward a display (ssh -X)")


# --------------------------------------------------------------------------- main loop

PARTS = ("read", "pre", "model", "post", "draw")  # one frame of the loop, in order
WINDOW = "cspdet"


def run(args) -> dict:
    """The demo loop; returns counters for scripts, tests and benchmarks/frame_loop.py.

    ``fps`` is whole-loop frames per second (waiting for the frame, pre-processing, model,
    post-processing, drawing, showing and saving all count); ``timing`` holds each part's
    median milliseconds per frame (:data:`PARTS`; ``draw`` covers tracking, drawing, showing and
    saving); ``skipped`` counts undecodable video frames, ``reconnects`` a stream's comebacks.
    """
    if not args.no_show:
        check_can_show()
    # the Predictor's pre-processing and size rule (trained size, ONNX fixed size, or --size)
    detect = Predictor(args.weights, img_size=args.size, device=args.device, conf_thres=args.conf_thres,
                       iou_thres=args.iou_thres, max_det=args.max_det, threads=args.threads)
    size = detect.img_size
    reader = FrameReader(args.source, reconnect=ReconnectPolicy(attempts=args.reconnect))
    save_dir = Path(args.save_dir or Path("runs") / "demo")
    writer = FrameWriter(save_dir, reader.kind, reader.fps)
    results = JsonLinesWriter(save_dir / "predictions.jsonl") if args.save_json else None
    frames, fps, tracker, last_name = 0, None, None, None
    times = {k: [] for k in PARTS}
    log.info("source %s (%s), %s backend, input %s, %s", args.source, reader.kind,
             detect.backend, size, detect.describe_conf())
    t_start = t_last = t_prev = time.perf_counter()
    try:
        tracker = Tracker(frame_rate=reader.fps) if args.track else None
        for frame, name in reader:
            t_frame = time.perf_counter()
            det = detect(frame)
            t_det = time.perf_counter()
            if tracker is not None:
                if name != last_name:  # a folder's next video (or image) starts new tracks
                    tracker.reset()
                det, last_name = tracker.update(det), name
            if frames:  # the FPS counter shows the whole loop, frame to frame
                inst = 1.0 / max(t_frame - t_prev, 1e-6)
                fps = inst if fps is None else 0.9 * fps + 0.1 * inst
            t_prev = t_frame
            draw(frame, det["boxes"], det["scores"], det["labels"], detect.names,
                 fps if reader.kind != "image" else None, args.line_width, det.get("track_ids"))
            frames += 1
            if args.save:
                writer.write(frame, name)
            if results is not None:
                results.write(det, name)
            if not args.no_show and _show_quits(frame, name, reader):
                break
            t_end = time.perf_counter()
            times["read"].append((t_frame - t_last) * 1e3)  # waiting for the reader thread
            for part in ("pre", "model", "post"):
                times[part].append(detect.timing[part])
            times["draw"].append((t_end - t_det) * 1e3)
            t_last = t_end
            if args.max_frames and frames >= args.max_frames:
                break
    finally:  # also when the source is lost: what was saved stays readable, and is reported
        reader.close()
        writer.close()
        json_path = results.close() if results is not None else None
        if not args.no_show:
            cv2.destroyAllWindows()
        _log_outputs(reader, writer.saved + ([json_path] if json_path else []))
    wall = time.perf_counter() - t_start
    timing = {k: float(np.median(v)) if v else 0.0 for k, v in times.items()}
    return {"frames": frames, "saved": [str(p) for p in writer.saved], "fps": fps, "dropped": reader.dropped,
            "skipped": reader.skipped, "reconnects": reader.reconnects, "results": json_path,
            "timing": timing, "mean_fps": frames / wall if wall > 0 else None, "backend": detect.backend,
            "img_size": size, "predictor": detect}


def _show_quits(frame, name: str, reader: FrameReader) -> bool:
    """Show ``frame``; True when the user pressed q or Esc. A still image waits for a key."""
    cv2.imshow(WINDOW, frame)
    still = reader.kind in ("image", "folder") and Path(name).suffix != ""  # not a video frame
    return (cv2.waitKey(0 if still else 1) & 0xFF) in (ord("q"), 27)


def _log_outputs(reader: FrameReader, saved: list) -> None:
    for line in reader.report():
        log.info(line)
    for path in saved[:1] + ([f"... {len(saved) - 1} more"] if len(saved) > 1 else []):
        log.info("saved %s", path)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="checkpoint (.pt), exported model (.onnx) or config (random weights)")
    ap.add_argument("--source", default="0", help="camera index, video, image, folder or rtsp/http URL (default 0)")
    ap.add_argument("--size", type=int, default=None, help="input size (default: the model's)")
    ap.add_argument("--conf-thres", "--conf", type=float, default=None,
                    help="score threshold (default: the F1-optimal one stored with the weights, else 0.25)")
    ap.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    ap.add_argument("--max-det", type=int, default=100, help="boxes per frame")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (PyTorch backend)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    ap.add_argument("--save", action="store_true", help="write the annotated video / images")
    ap.add_argument("--save-dir", default=None, help="where --save writes (default runs/demo)")
    ap.add_argument("--no-show", action="store_true", help="no window (headless machines)")
    ap.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0 = until the end)")
    ap.add_argument("--line-width", type=int, default=None, help="box line width in pixels")
    ap.add_argument("--track", action="store_true", help="give each object an id across frames (ByteTrack)")
    ap.add_argument("--save-json", action="store_true", help="write boxes (and ids) to <save-dir>/predictions.jsonl")
    ap.add_argument("--reconnect", type=int, default=ReconnectPolicy.attempts, metavar="N",
                    help="reopen a stream that stops up to N times, with back-off (0 = end at once)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        stats = run(args)
    except (DemoError, FrameIOError, TrackingUnavailableError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if stats["frames"] > 1 and stats["mean_fps"]:
        t = stats["timing"]
        log.info("%d frames, %.1f FPS (whole loop); per frame: read %.1f ms, pre-process %.1f, model %.1f, "
                 "post-process %.1f, draw/show/save %.1f", stats["frames"], stats["mean_fps"],
                 *(t[k] for k in PARTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
