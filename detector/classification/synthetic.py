"""Synthetic classification data for the quick start: an ImageFolder tree made on first use.

Ten classes, learnable in minutes on a CPU but not at a glance: five shapes (circle, square,
triangle, star, cross; one per image, random colour, size, rotation and place, drawn with the
detection shapes' drawing code on the same noisy, textured backgrounds) and five textures
(stripes, checkerboard, dots, rings, grid; random period, angle, phase and colours, blended over
a background). Every image gets sensor-like noise and some are blurred or low in contrast.
The colour never tells the class. Output: ``<root>/{train,val}/<class>/<n>.png``, deterministic
by seed; :func:`ensure_synthetic` caches it under ``~/.cache/cspdet`` (``CSPDET_CACHE_DIR``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..common import build_once
from ..data.config import default_cache_root
from ..data.shapes import draw_shape, hsv_color, noisy_background, shape_points  # the detection data's drawing


GENERATOR_VERSION = 2
SHAPES = ("circle", "square", "triangle", "star", "cross")
TEXTURES = ("stripes", "checkerboard", "dots", "rings", "grid")
CLASSES = SHAPES + TEXTURES


@dataclass
class SyntheticConfig:
    """``data.synthetic`` section: how much synthetic data to make (the quick-start default)."""
    train_per_class: int = 200
    val_per_class: int = 50
    img_size: int = 64
    seed: int = 0
    cache_dir: str = ""          # empty: the cspdet cache folder

    def __post_init__(self):
        from ..config import ConfigError
        for key in ("train_per_class", "val_per_class"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.synthetic.{key} must be >= 1, got {getattr(self, key)}")
        if self.img_size < 16:
            raise ConfigError(f"data.synthetic.img_size must be >= 16, got {self.img_size}")


def synthetic_root(cfg: SyntheticConfig) -> Path:
    """The cache folder of this configuration (its parameters hashed into the name)."""
    params = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "cache_dir"}
    params["version"] = GENERATOR_VERSION
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    base = Path(os.path.expanduser(cfg.cache_dir)) if cfg.cache_dir else default_cache_root()
    return base / f"cls-synthetic-{digest}"


def ensure_synthetic(cfg: SyntheticConfig) -> Path:
    """Generate the data unless a finished copy is cached (detector.common.build_once)."""
    return build_once(synthetic_root(cfg), lambda tmp: make_synthetic(tmp, cfg),
                      f"synthetic classification data ({len(CLASSES)} classes, {cfg.train_per_class} "
                      f"train + {cfg.val_per_class} val per class, {cfg.img_size} px, seed {cfg.seed})")


def make_synthetic(out_dir, cfg: SyntheticConfig) -> Path:
    """Write ``train/`` and ``val/`` ImageFolder trees into ``out_dir``."""
    out = Path(out_dir)
    for split, per_class, offset in (("train", cfg.train_per_class, 0), ("val", cfg.val_per_class, 1)):
        for c, name in enumerate(CLASSES):
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            # one stream per (seed, split, class): adding classes or images keeps the others
            rng = np.random.default_rng([cfg.seed, offset, c])
            for i in range(per_class):
                img = draw_sample(rng, c, cfg.img_size)
                cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return out


def draw_sample(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    """One RGB uint8 ``size`` x ``size`` image of class ``cls`` (an index into CLASSES)."""
    work = max(size, 96)  # draw at >= 96 px so thin strokes and small shapes survive, then resize
    img = noisy_background(rng, work, work)
    color = _random_color(rng)
    name = CLASSES[cls]
    if name in SHAPES:
        side = float(rng.uniform(0.5, 0.9)) * work
        cx, cy = (rng.uniform(side / 2, work - side / 2) for _ in range(2))
        aspect = float(rng.uniform(0.8, 1.25)) if name != "circle" else 1.0
        draw_shape(img, shape_points(name, cx, cy, side, aspect, float(rng.uniform(0, 360))), color)
    else:
        mask = _texture(rng, name, work)
        alpha = float(rng.uniform(0.7, 1.0))
        second = np.asarray(_random_color(rng), np.float32) * 0.5
        fg = mask[..., None] * np.asarray(color, np.float32) + (1 - mask[..., None]) * second
        img = (img * (1 - alpha) + fg * alpha).clip(0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 1.5)))
    if rng.random() < 0.2:  # low contrast
        k = float(rng.uniform(0.4, 0.7))
        img = (img.astype(np.float32) * k + 128 * (1 - k)).astype(np.uint8)
    if work != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    noise = rng.normal(0, rng.uniform(3, 12), img.shape)
    return np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _random_color(rng: np.random.Generator):
    """Saturated and bright: the class is the shape or pattern, never a faint colour."""
    hue = int(rng.integers(180))
    return tuple(int(v) for v in hsv_color(hue, int(rng.integers(150, 256)), int(rng.integers(150, 256))))


def _texture(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """A soft 0..1 mask of a periodic pattern, randomly rotated and phased."""
    period = float(rng.uniform(0.2, 0.45)) * n
    theta = float(rng.uniform(0, math.pi))
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    u = xx * math.cos(theta) + yy * math.sin(theta) + rng.uniform(0, period)
    v = -xx * math.sin(theta) + yy * math.cos(theta) + rng.uniform(0, period)
    w = 2 * math.pi / period
    if kind == "stripes":
        m = np.sin(w * u) > 0
    elif kind == "checkerboard":
        m = (np.sin(w * u) > 0) ^ (np.sin(w * v) > 0)
    elif kind == "dots":
        m = (np.cos(w * u) + np.cos(w * v)) > 1.2
    elif kind == "rings":
        cx, cy = rng.uniform(0, n, 2)
        m = np.sin(w * np.hypot(xx - cx, yy - cy)) > 0
    else:  # grid: thin crossing lines
        m = (np.cos(w * u) > 0.7) | (np.cos(w * v) > 0.7)
    return cv2.GaussianBlur(m.astype(np.float32), (0, 0), 0.8)
