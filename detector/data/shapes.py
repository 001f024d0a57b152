"""Synthetic "shapes" detection data for the quick start: learnable in minutes on a CPU.

Five classes (circle, square, triangle, star, cross) drawn in saturated colours (the colour
is random, so the class is the shape) on textured, noisy, low-saturation backgrounds; objects
are 20-120 px at 320, with scale variation and some overlap, slightly rotated. The output is
``images/{train,val}/*.jpg`` plus COCO instances JSON per split, deterministic by seed.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np

from ..common import build_once


GENERATOR_VERSION = 3
CLASSES = ("circle", "square", "triangle", "star", "cross")


def make_shapes(out_dir, num_train: int = 1500, num_val: int = 200, img_size: int = 320,
                seed: int = 0, progress: bool = True) -> Path:
    """Write the shapes dataset into ``out_dir`` (created); returns it.

    Layout: ``images/train/*.jpg``, ``images/val/*.jpg``, ``annotations/instances_train.json``,
    ``annotations/instances_val.json``. Split ``s`` uses seed ``(seed, s)`` so the val images do
    not change with ``num_train``.
    """
    info = {"description": "cspdet synthetic shapes", "seed": seed, "version": GENERATOR_VERSION}
    write_generated_coco(out_dir, (("train", num_train), ("val", num_val)), seed,
                         lambda rng: draw_image(rng, img_size), CLASSES, info, progress, "shapes")
    return Path(out_dir)


def write_generated_coco(out_dir, splits, seed: int, draw, class_names, info: dict,
                         progress: bool = True, desc: str = "data"):
    """Write generated images and their COCO JSON per split; returns {split: (images, boxes)}.

    ``draw(rng) -> (RGB image, [(class, (x1, y1, x2, y2)), ...])``. Split number ``s`` draws
    from ``default_rng([seed, s])``, so the val images do not change with the train count.
    Layout: ``images/<split>/*.jpg`` and ``annotations/instances_<split>.json``.
    """
    from tqdm import tqdm

    out = Path(out_dir)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    counts = {}
    for split_index, (split, count) in enumerate(splits):
        img_dir = out / "images" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, split_index])
        images, anns = [], []
        for i in tqdm(range(count), desc=f"{desc} {split}", unit="img", disable=not progress,
                      leave=False):
            img, objects = draw(rng)
            name = f"{i:06d}.jpg"
            cv2.imwrite(str(img_dir / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 92])
            image_id = i + 1
            images.append({"id": image_id, "file_name": name,
                           "height": img.shape[0], "width": img.shape[1]})
            for cls, (x1, y1, x2, y2) in objects:
                w, h = x2 - x1, y2 - y1
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cls + 1,
                             "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": 0})
        counts[split] = (len(images), len(anns))
        data = {"info": dict(info), "images": images, "annotations": anns,
                "categories": [{"id": k + 1, "name": n, "supercategory": "shape"}
                               for k, n in enumerate(class_names)]}
        with open(out / "annotations" / f"instances_{split}.json", "w", encoding="utf-8") as f:
            json.dump(data, f)
    return counts


def ensure_shapes(root, num_train: int, num_val: int, img_size: int, seed: int) -> Path:
    """Generate into ``root`` unless a finished copy is there (detector.common.build_once)."""
    return build_once(root, lambda tmp: make_shapes(tmp, num_train, num_val, img_size, seed),
                      f"synthetic shapes data ({num_train} train, {num_val} val, {img_size} px, seed {seed})")


# ------------------------------------------------------------------------------ drawing
# saturated colours only: objects stand out from the low-saturation backgrounds
_COLORS = np.array([[230, 25, 25], [25, 180, 40], [30, 60, 230], [240, 200, 20], [230, 20, 200],
                    [20, 200, 220], [250, 120, 10], [140, 30, 220]], np.float32)


def draw_image(rng: np.random.Generator, img_size: int) -> Tuple[np.ndarray, List]:
    """One image (RGB uint8) and its objects ``[(class, (x1, y1, x2, y2)), ...]``."""
    h = int(img_size * rng.uniform(0.75, 1.0)) if rng.random() < 0.5 else img_size
    w = int(img_size * rng.uniform(0.75, 1.0)) if h == img_size and rng.random() < 0.5 else img_size
    img = noisy_background(rng, h, w)
    s = img_size / 320.0
    boxes: List[Tuple[float, float, float, float]] = []
    objects = []
    for _ in range(int(rng.integers(1, 9))):
        for _attempt in range(20):
            size = float(np.exp(rng.uniform(math.log(20 * s), math.log(120 * s))))
            cx, cy = rng.uniform(size / 2, w - size / 2), rng.uniform(size / 2, h - size / 2)
            cls = int(rng.integers(len(CLASSES)))
            angle = float(rng.uniform(-20, 20))
            aspect = float(rng.uniform(0.8, 1.25)) if CLASSES[cls] != "circle" else 1.0
            pts = shape_points(CLASSES[cls], cx, cy, size, aspect, angle)
            box = _bbox(pts, w, h)
            if box is not None and _placement_ok(box, boxes):
                break
        else:
            continue
        color = _COLORS[int(rng.integers(len(_COLORS)))] * rng.uniform(0.8, 1.0)
        color = tuple(int(c) for c in np.clip(color + rng.normal(0, 10, 3), 0, 255))
        draw_shape(img, pts, color)
        boxes.append(box)
        objects.append((cls, box))
    noise = rng.normal(0, rng.uniform(3, 10), img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return img, objects


def noisy_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Low-saturation texture: a colour gradient, blurred noise blobs and a faint grating."""
    base = rng.uniform(60, 190)
    tint = rng.normal(0, 12, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = rng.normal(0, 30, 2)
    img = base + tint[None, None] + (gx * xx / w + gy * yy / h)[..., None]
    cells = int(rng.integers(4, 16))
    sigma = rng.uniform(10, 30)
    blobs = (rng.normal(0, sigma, (cells, cells, 1)) + rng.normal(0, sigma / 3, (cells, cells, 3)))
    blobs = blobs.astype(np.float32)
    img = img + cv2.resize(blobs, (w, h), interpolation=cv2.INTER_CUBIC)
    freq, theta = rng.uniform(0.03, 0.2), rng.uniform(0, math.pi)
    grating = np.sin(freq * (xx * math.cos(theta) + yy * math.sin(theta)) + rng.uniform(0, 6.28))
    img = img + (rng.uniform(0, 12) * grating)[..., None]
    fine = cv2.GaussianBlur(rng.normal(0, 12, (h, w)).astype(np.float32), (0, 0), 1.2)
    img = img + fine[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def hsv_color(hue: float, saturation: float, value: float) -> np.ndarray:
    """RGB (float32) of an OpenCV HSV colour (hue 0-180, saturation and value 0-255): the one
    colour conversion the generated datasets share; each draws its own ranges."""
    hsv = np.array([[[hue, saturation, value]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _circle(r):      # a polygon with many vertices
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], 1) * r


def _square(r):
    return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * r * 0.85


def _triangle(r):
    t = np.array([-90, 30, 150]) * np.pi / 180
    pts = np.stack([np.cos(t), np.sin(t)], 1) * r
    pts[:, 1] += r * 0.25
    return pts


def _star(r):        # five-pointed
    t = (np.arange(10) * 36 - 90) * np.pi / 180
    rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
    return np.stack([np.cos(t) * rad, np.sin(t) * rad], 1)


def _cross(r):       # plus sign
    a, b = r, r * 0.33
    return np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a],
                     [-b, b], [-a, b], [-a, -b], [-b, -b]], np.float64)


OUTLINES = {"circle": _circle, "square": _square, "triangle": _triangle, "star": _star, "cross": _cross}


def shape_points(name: str, cx: float, cy: float, size: float, aspect: float, angle: float):
    """Outline of shape ``name`` (one of CLASSES) of ``size`` px, stretched by ``aspect``,
    rotated by ``angle`` degrees and centred at (cx, cy)."""
    pts = OUTLINES[name](size / 2)
    pts = pts * np.array([aspect, 1.0 / aspect])
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    pts = pts @ np.array([[c, s], [-s, c]])
    return pts + np.array([cx, cy])


def _bbox(pts: np.ndarray, w: int, h: int):
    x1, y1 = pts.min(0)
    x2, y2 = pts.max(0)
    if x1 < 0 or y1 < 0 or x2 > w - 1 or y2 > h - 1:
        return None
    # the filled, anti-aliased polygon and its 1 px outline cover pixels x1 .. x2 inclusive,
    # and pixel i spans [i, i + 1] in COCO coordinates (checked in tests/test_data_shapes.py)
    return tuple(round(float(v), 2) for v in (x1, y1, x2 + 1, y2 + 1))


def _placement_ok(box, boxes) -> bool:
    """Allow some overlap, but keep every earlier object mostly visible (<= 35% covered)."""
    area = (box[2] - box[0]) * (box[3] - box[1])
    for b in boxes:
        iw = min(box[2], b[2]) - max(box[0], b[0])
        ih = min(box[3], b[3]) - max(box[1], b[1])
        if iw <= 0 or ih <= 0:
            continue
        inter = iw * ih
        if inter > 0.35 * (b[2] - b[0]) * (b[3] - b[1]) or inter > 0.6 * area:
            return False
    return True


def draw_shape(img: np.ndarray, pts: np.ndarray, color) -> None:
    """A filled anti-aliased polygon with a darker 1 px edge, in place."""
    poly = np.round(pts * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(img, [poly], color, lineType=cv2.LINE_AA, shift=4)
    edge = tuple(int(c * 0.6) for c in color)
    cv2.polylines(img, [poly], True, edge, 1, lineType=cv2.LINE_AA, shift=4)
