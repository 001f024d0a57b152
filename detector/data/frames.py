"""Frame sources for live detection: a camera, a network stream, a video, an image or a folder.

:func:`classify_source` tells what a source string names; :class:`FrameReader` reads its
frames in a background thread, so the loop that runs the model never waits on the camera
(``cspdet predict``, benchmarks/frame_loop.py); :class:`FrameWriter` saves the annotated
frames as the source was (a video, or images).
"""
from __future__ import annotations

import logging
import queue
import re
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import cv2
import numpy as np

from .image_io import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"}
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class FrameIOError(RuntimeError):
    """A source that cannot be read (no such file or camera, an empty folder, a bad stream) or
    an output that cannot be written."""


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
            raise FrameIOError(f"no images or videos in folder {path}")
        return "folder", files
    if not path.exists():
        raise FrameIOError(f"source not found: {source} (expected a camera index such as 0, a video, an "
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
                raise FrameIOError(f"cannot open camera {value}: it does not exist or another program "
                                       "uses it. List cameras with `ls /dev/video*` (Linux) and try another "
                                       "index (1, 2, ...), or give a video file or image folder")
            if self.kind == "stream":
                raise FrameIOError(f"cannot open stream {value}: check the address, the credentials "
                                       "and that the camera is reachable from this machine")
            raise FrameIOError(f"cannot read video {value}: not a video OpenCV can decode")
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


class FrameWriter:
    """Saves frames into ``folder``: one ``<name>.mp4`` for a camera, stream or video source
    (at the source's ``fps``), else each frame as an image (its own name, or
    ``<name>_<index>.jpg`` for a video's frames in a folder). ``saved``: the files written."""

    def __init__(self, folder, kind: str, fps: float = 30.0):
        self.folder, self.kind, self.fps = Path(folder), kind, fps
        self.saved: List[Path] = []
        self._video = None
        self._count = 0

    def write(self, frame: np.ndarray, name: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._count += 1
        if self.kind in ("video", "camera", "stream"):
            if self._video is None:
                out = self.folder / f"{name}.mp4"
                h, w = frame.shape[:2]
                self._video = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
                if not self._video.isOpened():
                    raise FrameIOError(f"cannot write {out}: this OpenCV has no mp4v encoder")
                self.saved.append(out)
            self._video.write(frame)
            return
        out = self.folder / (name if Path(name).suffix else f"{name}_{self._count:06d}.jpg")
        cv2.imwrite(str(out), frame)
        self.saved.append(out)

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
