"""Object ids across video frames: ByteTrack over the :class:`~detector.inference.Predictor`'s boxes.

The tracker is Roboflow's ``trackers`` package (``ByteTrackTracker``, the maintained successor
of ``supervision.ByteTrack``, which supervision 0.30 removed), fed ``supervision.Detections``.
It sees only boxes in original image pixels, scores and labels, so it works the same behind
the PyTorch and the ONNX Runtime backend. Optional: ``pip install cspdet[track]``.

    tracker = Tracker(frame_rate=reader.fps)
    det = tracker.update(predictor(frame))   # + "track_ids": int per box, -1 = not confirmed yet
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INSTALL_HINT = "tracking needs the optional packages of the track extra: pip install cspdet[track]"


class TrackingUnavailableError(RuntimeError):
    """The tracking packages are not installed (the message says how to install them)."""


@dataclass(frozen=True)
class TrackSettings:
    """ByteTrack's knobs. Its published 0.6 / 0.7 thresholds suit strong detectors; 0.5 keeps
    objects of a small real-time model tracked. A track is confirmed after ``min_frames``
    consecutive detections and kept ``lost_frames`` frames after its object was last seen."""
    high_conf: float = 0.5  # detections at or above are matched first and may start tracks
    activation: float = 0.5  # the least score that starts a new track
    min_iou: float = 0.1  # the least IoU that matches a detection to a track
    min_frames: int = 2
    lost_frames: int = 30


def _import_trackers():
    try:
        import supervision
        from trackers import ByteTrackTracker
    except ImportError as e:
        raise TrackingUnavailableError(f"{INSTALL_HINT} ({e})") from None
    return supervision, ByteTrackTracker


class Tracker:
    """Gives each detected object an id that stays with it from frame to frame."""

    def __init__(self, settings: TrackSettings = TrackSettings(), frame_rate: float = 30.0):
        self._sv, byte_track = _import_trackers()
        self.settings = settings
        self._tracker = byte_track(
            lost_track_buffer=settings.lost_frames, frame_rate=frame_rate,
            track_activation_threshold=settings.activation, minimum_consecutive_frames=settings.min_frames,
            minimum_iou_threshold=settings.min_iou, high_conf_det_threshold=settings.high_conf)

    def update(self, det: dict) -> dict:
        """One frame's Predictor result -> the same keys plus ``track_ids`` (int64; -1 for a box
        not confirmed as a track yet). Boxes may come back in another order; every per-box
        field (boxes, scores, labels, names) follows them."""
        boxes = np.asarray(det["boxes"], np.float32).reshape(-1, 4)
        detections = self._sv.Detections(xyxy=boxes, confidence=np.asarray(det["scores"], np.float32),
                                         class_id=np.asarray(det["labels"], np.int64),
                                         data={"index": np.arange(len(boxes))})
        tracked = self._tracker.update(detections)
        order = np.asarray(tracked.data.get("index", np.arange(len(tracked))), np.int64)
        ids = tracked.tracker_id if tracked.tracker_id is not None else np.full(len(order), -1)
        out = {k: _take(v, order) if _per_box(v, len(boxes)) else v for k, v in det.items()}
        out["track_ids"] = np.asarray(ids, np.int64)
        return out

    def reset(self) -> None:
        """Forget every track (a new video starts)."""
        self._tracker.reset()


def _per_box(value, n: int) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) and len(value) == n


def _take(value, order: np.ndarray):
    if isinstance(value, np.ndarray):
        return value[order]
    return [value[i] for i in order]
