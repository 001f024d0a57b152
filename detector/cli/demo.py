#!/usr/bin/env python
"""Live detection demo: webcam, video file, image, image folder or network stream.

    python tools/demo.py --weights runs/csppelee_efm_sam/best.pt --source 0          # webcam 0
    python tools/demo.py --weights best_320.onnx --source video.mp4 --save            # ONNX Runtime
    python tools/demo.py --weights best.pt --source images/ --no-show --save          # headless
    python tools/demo.py --weights best.pt --source rtsp://user:pass@camera/stream

A window shows boxes, class names, scores and FPS; q or Esc quits (for images, any other key
shows the next one). Frames are read in a background thread, so inference never waits on the
camera; live sources keep only the newest frame. --save writes the annotated video or images to
runs/demo/. The window needs an OpenCV build with GUI support (see the message if yours has none).
"""
from __future__ import annotations

import argparse
import logging
import os
import queue
import re
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional, Tuple


import cv2  # noqa: E402
import numpy as np  # noqa: E402

from detector.data.image_io import IMAGE_SUFFIXES  # noqa: E402
from detector.drawing import class_color, draw_boxes  # noqa: E402,F401
from detector.inference import Predictor  # noqa: E402

log = logging.getLogger("demo")

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"}
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")
HEADLESS_HELP = (
    "this OpenCV build has no GUI support (GUI: NONE in cv2.getBuildInformation()), so it cannot "
    "open a window. This usually means opencv-python-headless (a dependency of albumentations) "
    "was installed over opencv-python. Put the GUI build back with\n"
    '    pip install --no-deps --force-reinstall "opencv-python>=4.9"\n'
    "or run without a window: --no-show (add --save to keep the annotated output).")


class DemoError(RuntimeError):
    """A problem the user can fix (bad source, no camera, no GUI); printed without a traceback."""


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


# --------------------------------------------------------------------------- sources

def classify_source(source: str) -> Tuple[str, object]:
    """``(kind, value)``: camera (int or /dev/video path), stream (URL), video, image, folder."""
    if re.fullmatch(r"\d+", source):
        return "camera", int(source)
    if source.startswith("/dev/video"):
        return "camera", source
    if source.lower().startswith(STREAM_PREFIXES):
        return "stream", source
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES))
        if not files:
            raise DemoError(f"no images or videos in folder {path}")
        return "folder", files
    if not path.exists():
        raise DemoError(f"source not found: {source} (expected a camera index such as 0, a video, an "
                        "image, a folder or an rtsp:// / http:// URL)")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return "image", [path]
    return "video", path


class FrameReader:
    """Reads frames in a background thread; iterate to get ``(frame_bgr, name)``.

    Live sources (camera, stream) keep only the newest frame so the shown detections stay
    current even when inference is slower than the camera; files queue every frame so that
    nothing is skipped in a saved video.
    """

    def __init__(self, source: str, queue_size: int = 4):
        self.kind, self.value = classify_source(source)
        self.live = self.kind in ("camera", "stream")
        self.fps = 30.0
        self.dropped = 0
        self._queue: "queue.Queue" = queue.Queue(maxsize=1 if self.live else queue_size)
        self._stop = threading.Event()
        self._error: Optional[BaseException] = None
        self._cap = None
        if self.kind in ("camera", "stream", "video"):
            self._cap = self._open_capture(self.value)
        self._thread = threading.Thread(target=self._run, name="frame-reader", daemon=True)
        self._thread.start()

    def _open_capture(self, value):
        cap = cv2.VideoCapture(value)
        if not cap.isOpened():
            cap.release()
            if self.kind == "camera":
                raise DemoError(f"cannot open camera {value}: it does not exist or another program "
                                "uses it. List cameras with `ls /dev/video*` (Linux) and try another "
                                "index (--source 1), or give a video file or image folder")
            if self.kind == "stream":
                raise DemoError(f"cannot open stream {value}: check the address, the credentials "
                                "and that the camera is reachable from this machine")
            raise DemoError(f"cannot read video {value}: not a video OpenCV can decode")
        if self.kind == "camera":
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        fps = cap.get(cv2.CAP_PROP_FPS)
        if fps and 1 <= fps <= 240:
            self.fps = float(fps)
        return cap

    def _put(self, item) -> bool:
        """Queue an item; a live source replaces the unread frame instead of waiting."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self.live:
                    try:
                        self._queue.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass
        return False

    def _frames(self) -> Iterator[Tuple[np.ndarray, str]]:
        if self._cap is not None:
            name = f"camera{self.value}" if self.kind == "camera" else Path(str(self.value)).stem or "stream"
            failures = 0
            while not self._stop.is_set():
                ok, frame = self._cap.read()
                if not ok:
                    if self.live and failures < 30:  # a stream may hiccup; a camera may need a moment
                        failures += 1
                        time.sleep(0.05)
                        continue
                    return
                failures = 0
                yield frame, name
            return
        for path in self.value:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                cap = cv2.VideoCapture(str(path))
                if not cap.isOpened():
                    log.warning("skipping %s: cannot decode this video", path)
                    continue
                while not self._stop.is_set():
                    ok, frame = cap.read()
                    if not ok:
                        break
                    yield frame, path.stem
                cap.release()
                continue
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None:
                log.warning("skipping %s: not a readable image", path)
                continue
            yield frame, path.name

    def _run(self) -> None:
        try:
            for item in self._frames():
                if not self._put(item):
                    break
        except BaseException as e:  # surfaced in the main thread
            self._error = e
        finally:
            self._put(None)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is None:
                if self._error is not None:
                    raise self._error
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        if self._cap is not None:
            self._cap.release()


# --------------------------------------------------------------------------- drawing

def draw(frame: np.ndarray, boxes, scores, labels, names: List[str], fps: Optional[float] = None,
         line_width: Optional[int] = None) -> np.ndarray:
    """Boxes with ``name score`` tags and an FPS counter, drawn in place."""
    lw = line_width or max(1, round(sum(frame.shape[:2]) / 600))
    font_scale = lw / 3
    draw_boxes(frame, boxes, labels, names, scores, lw)
    if fps is not None:
        text = f"FPS {fps:.1f}"
        cv2.putText(frame, text, (8, 12 + 10 * lw), cv2.FONT_HERSHEY_SIMPLEX, font_scale * 1.5,
                    (0, 0, 0), lw + 2, cv2.LINE_AA)
        cv2.putText(frame, text, (8, 12 + 10 * lw), cv2.FONT_HERSHEY_SIMPLEX, font_scale * 1.5,
                    (255, 255, 255), lw, cv2.LINE_AA)
    return frame


# --------------------------------------------------------------------------- main loop

PARTS = ("read", "pre", "model", "post", "draw")  # one frame of the loop, in order


def run(args) -> dict:
    """The demo loop; returns counters for scripts, tests and benchmarks/frame_loop.py.

    ``fps`` is whole-loop frames per second (waiting for the frame, pre-processing, model,
    post-processing, drawing, showing and saving all count); ``timing`` holds each part's
    median milliseconds per frame (:data:`PARTS`; ``draw`` covers drawing, showing and saving).
    """
    if not args.no_show:
        check_can_show()
    # the Predictor's pre-processing and size rule (trained size, ONNX fixed size, or --size)
    detect = Predictor(args.weights, img_size=args.size, device=args.device, conf_thres=args.conf_thres,
                       iou_thres=args.iou_thres, max_det=args.max_det, threads=args.threads)
    size = detect.img_size
    reader = FrameReader(args.source)
    save_dir = Path(args.save_dir) if args.save_dir else Path("runs") / "demo"
    writer, saved, frames, fps = None, [], 0, None
    times = {k: [] for k in PARTS}
    window = "cspdet"
    log.info("source %s (%s), %s backend, input %s, conf %.2f", args.source, reader.kind,
             detect.backend, size, args.conf_thres)
    t_start = t_last = t_prev = time.perf_counter()
    try:
        for frame, name in reader:
            t_frame = time.perf_counter()
            det = detect(frame)
            t_det = time.perf_counter()
            if frames:  # the FPS counter shows the whole loop, frame to frame
                inst = 1.0 / max(t_frame - t_prev, 1e-6)
                fps = inst if fps is None else 0.9 * fps + 0.1 * inst
            t_prev = t_frame
            draw(frame, det["boxes"], det["scores"], det["labels"], detect.names,
                 fps if reader.kind != "image" else None, args.line_width)
            frames += 1
            if args.save:
                writer = _save(frame, name, reader, save_dir, writer, saved, frames)
            if not args.no_show:
                cv2.imshow(window, frame)
                still = reader.kind in ("image", "folder") and Path(name).suffix != ""  # not a video frame
                key = cv2.waitKey(0 if still else 1) & 0xFF
                if key in (ord("q"), 27):
                    break
            t_end = time.perf_counter()
            times["read"].append((t_frame - t_last) * 1e3)  # waiting for the reader thread
            for part in ("pre", "model", "post"):
                times[part].append(detect.timing[part])
            times["draw"].append((t_end - t_det) * 1e3)
            t_last = t_end
            if args.max_frames and frames >= args.max_frames:
                break
    finally:
        reader.close()
        if writer is not None:
            writer.release()
        if not args.no_show:
            cv2.destroyAllWindows()
    wall = time.perf_counter() - t_start
    if reader.dropped:
        log.info("%d camera frames were dropped to stay live (inference slower than the camera)", reader.dropped)
    for path in saved[:1] + ([f"... {len(saved) - 1} more"] if len(saved) > 1 else []):
        log.info("saved %s", path)
    timing = {k: float(np.median(v)) if v else 0.0 for k, v in times.items()}
    return {"frames": frames, "saved": [str(p) for p in saved], "fps": fps, "dropped": reader.dropped,
            "timing": timing, "mean_fps": frames / wall if wall > 0 else None, "backend": detect.backend,
            "img_size": size, "predictor": detect}


def _save(frame, name, reader, save_dir: Path, writer, saved: list, index: int):
    """Append ``frame`` to the output video (created on the first frame) or write it as an image."""
    save_dir.mkdir(parents=True, exist_ok=True)
    if reader.kind in ("video", "camera", "stream"):
        if writer is None:
            out = save_dir / f"{name}.mp4"
            h, w = frame.shape[:2]
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), reader.fps, (w, h))
            if not writer.isOpened():
                raise DemoError(f"cannot write {out}: this OpenCV has no mp4v encoder")
            saved.append(out)
        writer.write(frame)
    else:
        out = save_dir / (name if Path(name).suffix else f"{name}_{index:06d}.jpg")
        cv2.imwrite(str(out), frame)
        saved.append(out)
    return writer


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="checkpoint (.pt), exported model (.onnx) or config (random weights)")
    ap.add_argument("--source", default="0", help="camera index, video, image, folder or rtsp/http URL (default 0)")
    ap.add_argument("--size", type=int, default=None, help="input size (default: the model's)")
    ap.add_argument("--conf-thres", type=float, default=0.25, help="score threshold")
    ap.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    ap.add_argument("--max-det", type=int, default=100, help="boxes per frame")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (PyTorch backend)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads")
    ap.add_argument("--save", action="store_true", help="write the annotated video / images")
    ap.add_argument("--save-dir", default=None, help="where --save writes (default runs/demo)")
    ap.add_argument("--no-show", action="store_true", help="no window (headless machines)")
    ap.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0 = until the end)")
    ap.add_argument("--line-width", type=int, default=None, help="box line width in pixels")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        stats = run(args)
    except DemoError as e:
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
