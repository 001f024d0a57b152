"""Tracking adapter: ids stay with moving objects, a new object gets a new id, fields stay aligned."""
import builtins

import numpy as np
import pytest

pytest.importorskip("trackers", reason="tracking needs the track extra (pip install cspdet[track])")

from detector.inference.tracking import Tracker, TrackingUnavailableError  # noqa: E402

NAMES = ["red", "green", "blue"]


def frame_detections(t: int) -> dict:
    """Three rectangles moving 6 px a frame in different directions; a fourth appears at t=5."""
    boxes = [[10 + 6 * t, 10, 50 + 6 * t, 40], [200, 20 + 6 * t, 240, 70 + 6 * t],
             [300 - 6 * t, 200, 340 - 6 * t, 260]]
    labels, scores = [0, 1, 2], [0.9, 0.8, 0.7]
    if t >= 5:
        boxes.append([100, 300, 150, 350])
        labels.append(1)
        scores.append(0.85)
    return {"boxes": np.array(boxes, np.float32), "scores": np.array(scores, np.float32),
            "labels": np.array(labels, np.int64), "names": [NAMES[i] for i in labels]}


def test_ids_stable_as_boxes_move_and_new_object_new_id():
    tracker = Tracker(frame_rate=10)
    by_label = {}  # label -> track ids seen once confirmed
    for t in range(10):
        det = frame_detections(t)
        out = tracker.update(det)
        assert len(out["boxes"]) == len(det["boxes"]) and out["track_ids"].dtype == np.int64
        for box, label, name, tid in zip(out["boxes"], out["labels"], out["names"], out["track_ids"]):
            assert name == NAMES[label]  # per-box fields reordered together
            k = int(np.argmin(np.abs(det["boxes"] - box).sum(1)))
            assert det["labels"][k] == label  # the box kept its own label
            if tid >= 0:
                by_label.setdefault((int(label), int(box[1] > 290)), set()).add(int(tid))
        if t >= 2:  # confirmed after two frames: every object has an id
            assert (out["track_ids"] >= 0).sum() >= 3
    ids = {key: tracks for key, tracks in by_label.items()}
    assert all(len(tracks) == 1 for tracks in ids.values()), ids  # one id per object, all the way
    assert len({next(iter(t)) for t in ids.values()}) == 4  # the newcomer got an id of its own


def test_empty_frame_and_reset():
    tracker = Tracker()
    empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
             "labels": np.zeros(0, np.int64), "names": []}
    out = tracker.update(empty)
    assert out["track_ids"].shape == (0,) and out["names"] == []
    for t in range(3):
        tracker.update(frame_detections(t))
    tracker.reset()
    assert (tracker.update(frame_detections(0))["track_ids"] == -1).all()  # nothing remembered


def test_missing_package_says_how_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_trackers(name, *args, **kwargs):
        if name.split(".")[0] == "trackers":
            raise ImportError("No module named 'trackers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_trackers)
    with pytest.raises(TrackingUnavailableError, match=r"pip install cspdet\[track\]"):
        Tracker()
