"""Tiny on-disk datasets of coloured rectangles for the data tests (written into tmp_path):
each class has its own colour, so a test can check a box against the pixels under it."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

# class -> a colour that identifies it in pixels (tests check boxes against pixels)
CLASS_COLORS = [(230, 30, 30), (30, 200, 30), (30, 30, 230)]


def rect_image(h, w, boxes, classes, bg=90):
    """RGB image with each box filled by its class colour (later boxes on top)."""
    img = np.full((h, w, 3), bg, np.uint8)
    for (x1, y1, x2, y2), c in zip(boxes, classes):
        img[int(y1):int(y2), int(x1):int(x2)] = CLASS_COLORS[c]
    return img


def write_rgb(path, img, **kw):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), *kw.get("params", ()))
    return path


def write_coco(root, images, annotations, categories=None, split="train"):
    """images: list of (file_name, h, w); annotations: list of dicts (id, image_id, ...)."""
    root = Path(root)
    cats = categories or [{"id": 3, "name": "red"}, {"id": 7, "name": "green"}, {"id": 9, "name": "blue"}]
    data = {"images": [{"id": i + 1, "file_name": n, "height": h, "width": w}
                       for i, (n, h, w) in enumerate(images)],
            "annotations": annotations, "categories": cats}
    ann = root / "annotations" / f"instances_{split}.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(data))
    return ann


def coco_cfg(root, names=("red", "green", "blue")):
    return {"format": "coco", "root": str(root), "names": list(names),
            "train": {"images": "images/train", "annotations": "annotations/instances_train.json"},
            "val": {"images": "images/train", "annotations": "annotations/instances_train.json"}}


def yolo_cfg(root, names=("red", "green", "blue")):
    return {"format": "yolo", "root": str(root), "names": list(names),
            "train": "images/train", "val": "images/train"}


def make_rect_coco(root, n=6, size=(120, 160), seed=0):
    """n images of coloured rectangles + COCO JSON (category ids 3, 7, 9 = classes 0, 1, 2)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    images, anns = [], []
    cat_ids = [3, 7, 9]
    for i in range(n):
        h, w = size
        boxes, classes = [], []
        for c in range(3):
            bw, bh = rng.integers(18, 40, 2)
            if c == 0:  # centre; the other two in opposite corners: no overlap
                x1 = w // 2 - int(bw) // 2 + int(rng.integers(-10, 11))
                y1 = h // 2 - int(bh) // 2 + int(rng.integers(-10, 11))
            else:
                x1, y1 = [(5, 5), (w - int(bw) - 5, h - int(bh) - 5)][c - 1]
            boxes.append((x1, y1, x1 + int(bw), y1 + int(bh)))
            classes.append(c)
        name = f"{i:03d}.png"
        write_rgb(root / "images" / "train" / name, rect_image(h, w, boxes, classes))
        images.append((name, h, w))
        for b, c in zip(boxes, classes):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat_ids[c],
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                         "area": float((b[2] - b[0]) * (b[3] - b[1])), "iscrowd": 0})
    write_coco(root, images, anns)
    return root


def write_yolo_label(path, rows):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(str(v) for v in r) + "\n" for r in rows))
    return path
