"""Boxes with class names (and scores) drawn on BGR images: the demo's and the data grid's."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np


def class_color(label: int) -> Tuple[int, int, int]:
    """A stable, distinct BGR colour per class (golden-ratio hue steps)."""
    hue = int((int(label) * 0.618033988749895 % 1.0) * 180)
    hsv = np.uint8([[[hue, 200, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def draw_boxes(img: np.ndarray, boxes, labels, names: Sequence[str], scores=None,
               line_width: Optional[int] = None, prefixes: Optional[Sequence[str]] = None) -> np.ndarray:
    """xyxy boxes with ``name`` (or ``name score``) tags, drawn in place on a BGR image;
    ``prefixes`` go before each tag (a track id)."""
    lw = line_width or max(1, round(sum(img.shape[:2]) / 600))
    font_scale = max(lw / 3, 0.35)
    thickness = max(lw - 1, 1)
    for k, (box, label) in enumerate(zip(boxes, labels)):
        label = int(label)
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        color = class_color(label)
        cv2.rectangle(img, (x1, y1), (x2, y2), color, lw, cv2.LINE_AA)
        text = names[label] if 0 <= label < len(names) else str(label)
        if scores is not None:
            text = f"{text} {float(scores[k]):.2f}"
        if prefixes is not None:
            text = f"{prefixes[k]}{text}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2
        cv2.rectangle(img, (x1, ty - th - base), (x1 + tw + 2, ty + base - 1), color, -1)
        cv2.putText(img, text, (x1 + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0),
                    thickness, cv2.LINE_AA)
    return img


def draw_frame(frame: np.ndarray, boxes, scores, labels, names: Sequence[str], fps: Optional[float] = None,
               line_width: Optional[int] = None, track_ids=None) -> np.ndarray:
    """The demo's frame: boxes with ``[#id ]name score`` tags and an FPS counter, in place."""
    lw = line_width or max(1, round(sum(frame.shape[:2]) / 600))
    font_scale = lw / 3
    prefixes = None if track_ids is None else [f"#{int(i)} " if i >= 0 else "" for i in track_ids]
    draw_boxes(frame, boxes, labels, names, scores, lw, prefixes)
    if fps is not None:
        text = f"FPS {fps:.1f}"
        cv2.putText(frame, text, (8, 12 + 10 * lw), cv2.FONT_HERSHEY_SIMPLEX, font_scale * 1.5,
                    (0, 0, 0), lw + 2, cv2.LINE_AA)
        cv2.putText(frame, text, (8, 12 + 10 * lw), cv2.FONT_HERSHEY_SIMPLEX, font_scale * 1.5,
                    (255, 255, 255), lw, cv2.LINE_AA)
    return frame
