"""Per-frame detections as JSON lines, the file ``cspdet predict --save-json`` writes.

One line per frame, so a long video or a live stream can be followed (``tail -f``) and read
back line by line::

    {"frame": 0, "source": "clip", "detections": [{"box": [x1, y1, x2, y2], "score": 0.91,
     "label": 0, "name": "person", "track_id": 3}, ...]}

Boxes are in original image pixels. ``track_id`` is there only when tracking (``--track``);
it is null for a box that is not confirmed as a track yet.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional


def frame_record(det: dict, frame: int, source: str) -> dict:
    """One frame's Predictor (or Tracker) result as a JSON-ready dict."""
    ids = det.get("track_ids")
    detections = []
    for k, box in enumerate(det["boxes"]):
        item = {"box": [round(float(v), 2) for v in box], "score": round(float(det["scores"][k]), 4),
                "label": int(det["labels"][k]), "name": str(det["names"][k])}
        if ids is not None:
            item["track_id"] = int(ids[k]) if ids[k] >= 0 else None
        detections.append(item)
    return {"frame": frame, "source": source, "detections": detections}


class JsonLinesWriter:
    """Appends one :func:`frame_record` line per frame to ``path`` (created on the first frame)."""

    def __init__(self, path):
        self.path = Path(path)
        self._file = None
        self.frames = 0

    def write(self, det: dict, source: str) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w")
        self._file.write(json.dumps(frame_record(det, self.frames, source)) + "\n")
        self._file.flush()  # readable while the demo runs, and complete if it is stopped
        self.frames += 1

    def close(self) -> Optional[Path]:
        """Close the file; its path, or None when no frame was written."""
        if self._file is None:
            return None
        self._file.close()
        return self.path
