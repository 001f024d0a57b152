"""Frame sources for live detection: a camera, a network stream, a video, an image or a folder.

:func:`classify_source` tells what a source string names; :class:`FrameReader` reads its
frames in a background thread, so the loop that runs the model never waits on the camera
(``cspdet predict``, benchmarks/frame_loop.py); :class:`FrameWriter` saves the annotated
frames as the source was (a video, or images).

Field faults: a network stream that stops is reopened with back-off (:class:`ReconnectPolicy`),
then given up with :class:`SourceLostError`; a camera that stops delivering frames raises it at
once; a video frame that cannot be decoded is skipped and counted (``FrameReader.skipped``).
"""
from __future__ import annotations

import logging
import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple

import cv2
import numpy as np

from .image_io import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"}
STREAM_PREFIXES = ("rtsp://", "rtmp://", "http://", "https://", "udp://", "tcp://")


class FrameIOError(RuntimeError):
    """A source that cannot be read (no such file or camera, an empty folder, a bad stream) or
    an output that cannot be written."""


class SourceLostError(FrameIOError):
    """A live source that worked and then stopped: a camera that vanished, or a stream that did
    not come back within the :class:`ReconnectPolicy`."""


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a network stream that stops is reopened: ``attempts`` tries, waiting ``first_delay``
    seconds and doubling up to ``max_delay``, within ``max_total`` seconds per outage.

    ``timeout`` bounds one open or read of a stream (seconds), so a silent camera cannot hang
    the reader; ``attempts=0`` ends at the first outage. Bounded, so the demo always ends.
    """
    attempts: int = 6
    first_delay: float = 0.5
    max_delay: float = 8.0
    max_total: float = 60.0
    timeout: float = 10.0

    def delays(self) -> Iterator[float]:
        """The waits before each reopen attempt, stopping at ``attempts`` or ``max_total``."""
        delay, spent = self.first_delay, 0.0
        for _ in range(self.attempts):
            if spent + delay > self.max_total:
                return
            yield delay
            spent += delay
            delay = min(delay * 2, self.max_delay)


def open_capture(kind: str, value, policy: ReconnectPolicy):
    """``cv2.VideoCapture`` for a source; a stream gets ``policy.timeout`` on open and read."""
    if kind == "stream":
        ms = int(policy.timeout * 1000)
        return cv2.VideoCapture(value, cv2.CAP_ANY,
                                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
    return cv2.VideoCapture(value)


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
    nothing is skipped in a saved video. Counters for the end-of-run report: ``dropped`` (live
    frames replaced by newer ones), ``skipped`` (video frames that could not be decoded) and
    ``reconnects`` (times a stream came back). ``capture_factory(kind, value, policy)`` opens a
    capture (:func:`open_capture`; tests pass fakes).
    """

    CAMERA_GRACE = 30  # failed reads, 0.05 s apart, before a camera counts as gone
    STREAM_GRACE = 3  # failed reads before a stream is reopened
    MAX_BAD_FRAMES = 300  # undecodable video frames in a row before the rest of a file is given up

    def __init__(self, source: str, queue_size: int = 4, reconnect: Optional[ReconnectPolicy] = None,
                 capture_factory: Optional[Callable] = None):
        self.kind, self.value = classify_source(source)
        self.live = self.kind in ("camera", "stream")
        self.policy = reconnect or ReconnectPolicy()
        self.fps = 30.0
        self.dropped = self.skipped = self.reconnects = self.frames_read = 0
        self._open = capture_factory or open_capture
        self._queue: "queue.Queue" = queue.Queue(maxsize=1 if self.live else queue_size)
        self._stop = threading.Event()
        self._error: Optional[BaseException] = None
        self._cap = None
        if self.kind in ("camera", "stream", "video"):
            self._cap = self._open_capture(self.value)
        self._thread = threading.Thread(target=self._run, name="frame-reader", daemon=True)
        self._thread.start()

    def _open_capture(self, value):
        cap = self._open(self.kind, value, self.policy)
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
            frames = self._live_frames() if self.live else self._video_frames(self._cap, str(self.value))
            for frame in frames:
                yield frame, name
            return
        for path in self.value:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                cap = self._open("video", str(path), self.policy)
                if not cap.isOpened():
                    log.warning("skipping %s: cannot decode this video", path)
                    continue
                try:
                    for frame in self._video_frames(cap, str(path)):
                        yield frame, path.stem
                finally:
                    cap.release()
                continue
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is None:
                log.warning("skipping %s: not a readable image", path)
                continue
            yield frame, path.name

    def _video_frames(self, cap, label: str) -> Iterator[np.ndarray]:
        """A file's frames; an undecodable frame is skipped and counted, the rest still read.

        A failed read is a bad frame only when a good one follows; failures at the end are the
        end (compared with the frame count the file's header lists, when it lists one).
        """
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        decoded = skipped = pending = 0
        while not self._stop.is_set():
            ok, frame = cap.read()
            if ok:
                if pending:
                    log.warning("%s: skipped %d unreadable frame(s) after frame %d", label, pending, decoded)
                    self.skipped += pending
                    skipped, pending = skipped + pending, 0
                decoded += 1
                yield frame
                continue
            pending += 1
            if total <= 0 or decoded + skipped + pending >= total or pending > self.MAX_BAD_FRAMES:
                break
        if total > 0 and decoded + skipped < total and not self._stop.is_set():
            log.warning("%s ended after %d of the %d frames it lists (truncated or corrupt at the end)",
                        label, decoded + skipped, total)

    def _live_frames(self) -> Iterator[np.ndarray]:
        """A camera's or stream's frames: a stream that stops is reopened (:meth:`_reconnect`), a
        camera that stops raises :class:`SourceLostError`."""
        failures, outage = 0, None
        while not self._stop.is_set():
            ok, frame = self._cap.read()
            if ok:
                failures, outage = 0, None  # an outage ends with a frame, not with a reopen
                self.frames_read += 1
                yield frame
                continue
            failures += 1
            if self.kind == "camera" and failures >= self.CAMERA_GRACE:
                raise SourceLostError(f"camera {self.value} stopped delivering frames after {self.frames_read} "
                                      "frames: it was unplugged, switched off or taken by another program")
            if self.kind == "stream" and failures >= self.STREAM_GRACE:
                outage = outage or {"waits": enumerate(self.policy.delays(), 1), "started": time.monotonic(),
                                    "attempts": 0}
                self._reconnect(outage)
                failures = 0
                continue
            self._stop.wait(0.05)

    def _reconnect(self, outage: dict) -> None:
        """Reopen the stream with the policy's next waits, one log line per attempt; raise
        :class:`SourceLostError` when the outage has used them all. A stream that opens but
        sends nothing stays in the same outage, so this always ends."""
        self._cap.release()
        for attempt, delay in outage["waits"]:
            outage["attempts"] = attempt
            log.warning("stream %s stopped after %d frames; reconnecting in %.1f s (attempt %d of %d)",
                        self.value, self.frames_read, delay, attempt, self.policy.attempts)
            if self._stop.wait(delay):
                return
            cap = self._open(self.kind, self.value, self.policy)
            if cap.isOpened():
                self._cap, self.reconnects = cap, self.reconnects + 1
                log.warning("stream %s is back (attempt %d)", self.value, attempt)
                return
            cap.release()
        if not outage["attempts"]:
            raise SourceLostError(f"stream {self.value} stopped after {self.frames_read} frames "
                                  "(reconnecting is off)")
        raise SourceLostError(f"stream {self.value} stopped after {self.frames_read} frames and did not come "
                              f"back after {outage['attempts']} reconnect attempts over "
                              f"{time.monotonic() - outage['started']:.0f} s: check the camera, the network "
                              "and the address")

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

    def report(self) -> List[str]:
        """End-of-run lines on what the source did: frames dropped or skipped, reconnections."""
        lines = []
        if self.dropped:
            lines.append(f"{self.dropped} camera frames were dropped to stay live (inference slower than the camera)")
        if self.skipped:
            lines.append(f"{self.skipped} unreadable video frames were skipped")
        if self.reconnects:
            lines.append(f"the stream was reconnected {self.reconnects} time(s)")
        return lines

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
