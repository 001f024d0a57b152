"""A harder generated detection set for ablations: the quick-start shapes saturate too fast.

On the shapes data every neck / activation / refine variant reaches about the same AP within a
few epochs, so an ablation table measured on it says nothing. This set keeps the shapes' idea
(generated on first use, deterministic by seed, no download) but makes the task hard enough
that a small budget stays far from saturation and model differences show:

* ten classes, several of them look-alikes at small sizes (square / diamond, hexagon / circle,
  ring / circle, star / cross, arrow / triangle);
* small and crowded objects: 3-28 % of the image side (log-uniform), 3-30 per image, half the
  images with objects clustered around a few centres;
* occlusion: later objects cover earlier ones, and unlabelled photo patches are pasted on top;
  a box is the tight box of an object's *visible* pixels, and an object less than 35 % visible
  is not labelled (like a mostly hidden object in COCO);
* clutter: unlabelled strokes and arcs, in the objects' colours too;
* real photo textures: backgrounds and object fills are crops of the photos in ``textures``
  (the coco128 images when present); without photos a procedural texture is used instead.
  Which one was used is part of the cache key and written in the dataset's ``README.txt``.

Layout (the same as :mod:`detector.data.shapes`): ``images/{train,val}/*.jpg`` and
``annotations/instances_{train,val}.json``.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from ..common import build_once
from .shapes import hsv_color, write_generated_coco

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
CLASSES = ("circle", "square", "triangle", "star", "cross",
           "ring", "hexagon", "diamond", "crescent", "arrow")
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
MIN_VISIBLE = 0.35        # an object less visible than this is drawn but not labelled
SIZE_RANGE = (0.03, 0.28)  # object size as a fraction of the image side (log-uniform)
OBJECTS_RANGE = (3, 30)    # objects attempted per image


# ------------------------------------------------------------------------------ textures
def default_texture_dirs() -> List[Path]:
    """Where ``textures: auto`` looks for photos, first hit wins.

    ``$CSPDET_PROXY_TEXTURES``, then the coco128 images of a shared data folder beside the
    checkout (``<repo>/../shared/data/coco128``) or beside the working directory.
    """
    out = []
    env = os.environ.get("CSPDET_PROXY_TEXTURES")
    if env:
        out.append(Path(env))
    repo = Path(__file__).resolve().parents[2]
    for base in (repo.parent, Path.cwd().parent, Path.cwd()):
        out.append(base / "shared" / "data" / "coco128" / "images")
    return out


def list_photos(folder: Path) -> List[Path]:
    """Every image file under ``folder`` (recursive), sorted, so the order is the same everywhere."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES
                  and p.is_file())


def resolve_textures(textures: str) -> Tuple[Optional[Path], List[Path]]:
    """``textures`` option -> (folder, photos); (None, []) = procedural backgrounds.

    ``auto``: the first of :func:`default_texture_dirs` that holds photos, else procedural;
    ``none`` (or empty): procedural; a path: that folder, which must hold photos.
    """
    value = (textures or "none").strip()
    if value.lower() == "none":
        return None, []
    if value.lower() == "auto":
        for folder in default_texture_dirs():
            if folder.is_dir():
                photos = list_photos(folder)
                if photos:
                    return folder, photos
        return None, []
    folder = Path(os.path.expanduser(value))
    photos = list_photos(folder) if folder.is_dir() else []
    if not photos:
        from ..config import ConfigError
        raise ConfigError(f"data.generate.textures: no photos (*.jpg, *.png) under '{value}'; "
                          "use 'auto' (coco128 when present, else procedural) or 'none'")
    return folder, photos


def texture_key(folder: Optional[Path], photos: Sequence[Path]) -> str:
    """What the cache key records of the textures: ``procedural`` or ``photos-<n>-<hash>``.

    The hash covers relative names and byte sizes, not the folder, so the same photos at
    another path give the same dataset folder.
    """
    if folder is None or not photos:
        return "procedural"
    h = hashlib.sha1()
    for p in photos:
        h.update(f"{p.relative_to(folder).as_posix()}:{p.stat().st_size}\n".encode())
    return f"photos-{len(photos)}-{h.hexdigest()[:8]}"


def load_photos(photos: Sequence[Path], short_side: int) -> List[np.ndarray]:
    """RGB photos resized so the short side is ``short_side`` (unreadable files skipped)."""
    out = []
    for p in photos:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            log.warning("proxy textures: cannot read %s, skipped", p)
            continue
        h, w = img.shape[:2]
        s = short_side / min(h, w)
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return out


# ------------------------------------------------------------------------------ writing
def make_proxy(out_dir, num_train: int = 2000, num_val: int = 300, img_size: int = 320,
               seed: int = 0, textures: str = "auto", progress: bool = True) -> Path:
    """Write the proxy dataset into ``out_dir`` (created); returns it.

    Split ``s`` uses seed ``(seed, s)``, so the val images do not change with ``num_train``.
    """
    folder, photo_paths = resolve_textures(textures)
    key = texture_key(folder, photo_paths)
    photos = load_photos(photo_paths, img_size)
    out = Path(out_dir)
    info = {"description": "cspdet proxy detection set", "seed": seed, "version": GENERATOR_VERSION,
            "textures": key}
    counts = write_generated_coco(out, (("train", num_train), ("val", num_val)), seed,
                                  lambda rng: draw_image(rng, img_size, photos), CLASSES, info,
                                  progress, "proxy")
    source = (f"crops of {len(photos)} photos ({key}) from {folder}" if photos
              else "procedural textures (no photos found)")
    (out / "README.txt").write_text(
        "cspdet proxy detection set (detector/data/proxy.py)\n"
        f"generator version {GENERATOR_VERSION}, seed {seed}, {img_size} px\n"
        f"textures: {source}\n"
        + "".join(f"{s}: {n} images, {a} boxes\n" for s, (n, a) in counts.items())
        + f"classes: {', '.join(CLASSES)}\n", encoding="utf-8")
    return out


def ensure_proxy(root, num_train: int, num_val: int, img_size: int, seed: int,
                 textures: str = "auto") -> Path:
    """Generate into ``root`` unless a finished copy is there (detector.common.build_once)."""
    return build_once(root, lambda tmp: make_proxy(tmp, num_train, num_val, img_size, seed, textures),
                      f"the proxy detection set ({num_train} train, {num_val} val, {img_size} px, seed {seed})")


# ------------------------------------------------------------------------------ drawing
def _random_color(rng: np.random.Generator) -> np.ndarray:
    """Any hue; saturation down to 0.25 so some objects are nearly as grey as the photos."""
    return hsv_color(rng.uniform(0, 180), rng.uniform(64, 255), rng.uniform(70, 255))


def _photo_crop(rng: np.random.Generator, photos: List[np.ndarray], h: int, w: int) -> np.ndarray:
    photo = photos[int(rng.integers(len(photos)))]
    ph, pw = photo.shape[:2]
    s = rng.uniform(0.35, 1.0)
    ch, cw = max(2, int(min(ph, pw * h / w) * s)), max(2, int(min(pw, ph * w / h) * s))
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = photo[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_LINEAR)


def _texture(rng: np.random.Generator, photos: List[np.ndarray], h: int, w: int) -> np.ndarray:
    """A background-like texture: a photo crop, or the procedural one when there are none."""
    if photos:
        return _photo_crop(rng, photos, h, w)
    return _procedural(rng, h, w)


def _procedural(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Photo stand-in: coloured multi-scale noise, a gradient, a grating and thin ellipses."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.full((h, w, 3), rng.uniform(50, 200), np.float32) + rng.normal(0, 25, 3)
    gx, gy = rng.normal(0, 40, 2)
    img += (gx * xx / w + gy * yy / h)[..., None]
    for cells in (4, 12, 40):
        noise = rng.normal(0, 30 / math.sqrt(cells / 4), (cells, cells, 3)).astype(np.float32)
        img += cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    freq, theta = rng.uniform(0.05, 0.4), rng.uniform(0, math.pi)
    img += (rng.uniform(0, 20) * np.sin(freq * (xx * math.cos(theta) + yy * math.sin(theta))))[..., None]
    for _ in range(int(rng.integers(0, 6))):  # elongated (>= 3:1), so not mistaken for circles
        c = (int(rng.integers(w)), int(rng.integers(h)))
        major = int(rng.integers(6, max(7, w // 3)))
        axes = (major, max(1, int(major * rng.uniform(0.05, 0.33))))
        col = tuple(float(v) for v in rng.uniform(0, 255, 3))
        cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, col, -1, cv2.LINE_AA)
    return np.clip(img, 0, 255).astype(np.uint8)


def _circle():
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], 1), False


def _square():
    return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * 0.8, False


def _triangle():
    t = np.array([-90, 30, 150]) * np.pi / 180
    pts = np.stack([np.cos(t), np.sin(t)], 1)
    pts[:, 1] += 0.25
    return pts, False


def _star():         # five-pointed
    t = (np.arange(10) * 36 - 90) * np.pi / 180
    rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
    return np.stack([np.cos(t) * rad, np.sin(t) * rad], 1), False


def _cross():        # plus sign
    a, b = 1.0, 0.33
    return np.array([[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b], [b, a], [-b, a],
                     [-b, b], [-a, b], [-a, -b], [-b, -b]], np.float64), False


def _ring():         # a circle stroke (drawn with a thickness)
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)], 1) * 0.85, True


def _hexagon():
    t = (np.arange(6) * 60) * np.pi / 180
    return np.stack([np.cos(t), np.sin(t)], 1), False


def _diamond():      # a tall rhombus (not a rotated square: width 0.6 of height)
    return np.array([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]], np.float64), False


def _crescent():     # a disc minus a shifted disc
    d = 0.55
    yi = math.sqrt(1 - d * d / 4)
    a0 = math.atan2(yi, d / 2)
    outer = np.linspace(a0, 2 * np.pi - a0, 32)
    p_outer = np.stack([np.cos(outer), np.sin(outer)], 1)
    b0, b1 = math.atan2(-yi, -d / 2) + 2 * np.pi, math.atan2(yi, -d / 2)
    inner = np.linspace(b0, b1, 24)[1:-1]
    p_inner = np.stack([np.cos(inner) + d, np.sin(inner)], 1)
    return np.concatenate([p_outer, p_inner]), False


def _arrow():        # pointing right
    return np.array([[-1, -0.25], [0.2, -0.25], [0.2, -0.6], [1, 0], [0.2, 0.6], [0.2, 0.25],
                     [-1, 0.25]], np.float64), False


# class name -> outline in a unit circle, and whether it is drawn as a thick stroke
UNIT_SHAPES = {"circle": _circle, "square": _square, "triangle": _triangle, "star": _star,
               "cross": _cross, "ring": _ring, "hexagon": _hexagon, "diamond": _diamond,
               "crescent": _crescent, "arrow": _arrow}
ROUND = ("circle", "ring")       # no aspect jitter: a stretched circle would be an ellipse
TURNED = ("arrow",)              # any of four directions, so the class is not the direction


def _place(pts: np.ndarray, cx: float, cy: float, size: float, aspect: float, angle: float) -> np.ndarray:
    pts = pts * (size / 2) * np.array([aspect, 1.0 / aspect])
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return pts @ np.array([[c, s], [-s, c]]) + np.array([cx, cy])


def _render_mask(shape: Tuple[int, int], pts: np.ndarray, stroke: int) -> np.ndarray:
    """Anti-aliased coverage (uint8 0..255) of a polygon (or of its thick outline)."""
    mask = np.zeros(shape, np.uint8)
    poly = np.round(pts * 16).astype(np.int32).reshape(-1, 1, 2)
    if stroke:
        cv2.polylines(mask, [poly], True, 255, stroke, lineType=cv2.LINE_AA, shift=4)
    else:
        cv2.fillPoly(mask, [poly], 255, lineType=cv2.LINE_AA, shift=4)
    return mask


def _blend(img: np.ndarray, mask: np.ndarray, fill: np.ndarray, x0: int, y0: int) -> None:
    """img[y0:, x0:] = mix(img, fill) by ``mask`` (all float32, in place)."""
    h, w = mask.shape
    a = (mask.astype(np.float32) / 255.0)[..., None]
    region = img[y0:y0 + h, x0:x0 + w]
    region *= 1 - a
    region += a * fill


def draw_image(rng: np.random.Generator, img_size: int, photos: List[np.ndarray],
               return_ids: bool = False):
    """One image (RGB uint8) and its labelled objects ``[(class, (x1, y1, x2, y2)), ...]``.

    In steps, drawing in this order (the random stream, and so every generated set, depends
    on it): background, clutter, objects, occluders, labels from the visible pixels, camera.
    ``return_ids`` also returns the map of which object owns each pixel (1-based drawing
    order, 0 = background or occluder) and the drawn objects ``[(id, class, full area)]``.
    """
    h = int(img_size * rng.uniform(0.75, 1.0)) if rng.random() < 0.3 else img_size
    w = img_size
    img = _texture(rng, photos, h, w).astype(np.float32)
    ids = np.zeros((h, w), np.int16)  # which object owns each pixel (0 = none)
    _draw_clutter(rng, img)
    lo, hi = math.log(SIZE_RANGE[0] * img_size), math.log(SIZE_RANGE[1] * img_size)
    drawn = _draw_objects(rng, img, ids, photos, img_size, lo, hi)
    _draw_occluders(rng, img, ids, photos, lo, hi)
    objects = _visible_labels(ids, drawn)
    img = _camera(rng, img)
    if return_ids:
        return img, objects, ids, drawn
    return img, objects


def _draw_clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Unlabelled strokes and arcs (no closed blobs: they would pass for objects)."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(0, 8))):
        col = tuple(float(v) for v in (_random_color(rng) if rng.random() < 0.5 else rng.uniform(0, 255, 3)))
        p1 = (int(rng.integers(w)), int(rng.integers(h)))
        if rng.random() < 0.5:
            p2 = (int(rng.integers(w)), int(rng.integers(h)))
            cv2.line(img, p1, p2, col, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            axes = (int(rng.integers(4, w // 3)), int(rng.integers(4, h // 3)))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(img, p1, axes, float(rng.uniform(0, 180)), start, start + rng.uniform(60, 200),
                        col, int(rng.integers(1, 4)), cv2.LINE_AA)


def _draw_objects(rng, img, ids, photos, img_size, lo, hi) -> List[Tuple[int, int, int]]:
    """The labelled objects, clustered around a few centres in half of the images; returns
    ``[(id, class, full area)]`` (later objects cover earlier ones in ``ids``)."""
    h, w = img.shape[:2]
    n_obj = int(rng.integers(OBJECTS_RANGE[0], OBJECTS_RANGE[1] + 1))
    centres = None
    if rng.random() < 0.5:
        centres = rng.uniform(0.2, 0.8, (int(rng.integers(1, 4)), 2)) * np.array([w, h])
    drawn = []
    for k in range(n_obj):
        size = float(np.exp(rng.uniform(lo, hi)))
        if centres is not None:
            c = centres[int(rng.integers(len(centres)))]
            cx, cy = rng.normal(c, 0.12 * img_size)
        else:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        cx = float(np.clip(cx, size / 2, w - size / 2))
        cy = float(np.clip(cy, size / 2, h - size / 2))
        cls = int(rng.integers(len(CLASSES)))
        area = _draw_object(rng, img, ids, photos, CLASSES[cls], k + 1, cx, cy, size)
        if area:
            drawn.append((k + 1, cls, area))
    return drawn


def _draw_object(rng, img, ids, photos, name: str, obj_id: int, cx, cy, size) -> int:
    """One object of class ``name``; returns its full area in pixels (0 = too small, skipped)."""
    h, w = img.shape[:2]
    unit, stroke = UNIT_SHAPES[name]()
    angle = float(rng.uniform(-30, 30)) + (90.0 * int(rng.integers(4)) if name in TURNED else 0.0)
    aspect = 1.0 if name in ROUND else float(rng.uniform(0.8, 1.25))
    pts = _place(unit, cx, cy, size, aspect, angle)
    thick = max(2, int(round(size * 0.14))) if stroke else 0
    pad = thick + 2
    x0, y0 = max(0, int(pts[:, 0].min()) - pad), max(0, int(pts[:, 1].min()) - pad)
    x1, y1 = min(w, int(pts[:, 0].max()) + pad + 1), min(h, int(pts[:, 1].max()) + pad + 1)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return 0
    mask = _render_mask((y1 - y0, x1 - x0), pts - np.array([x0, y0]), thick)
    inside = mask > 127
    area = int(inside.sum())
    if area < 6:
        return 0
    colour = _random_color(rng)
    t = rng.uniform(0.0, 0.55)  # how much photo texture shows through the colour
    fill = colour * (1 - t) + t * _texture(rng, photos, y1 - y0, x1 - x0).astype(np.float32)
    fill *= rng.uniform(0.75, 1.15, (1, 1, 1))
    _blend(img, mask, fill, x0, y0)
    if rng.random() < 0.5 and not stroke:  # a darker outline on half of the filled objects
        poly = np.round(pts * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(img, [poly], True, tuple(float(v) * 0.5 for v in colour), 1, cv2.LINE_AA, shift=4)
    ids[y0:y1, x0:x1][inside] = obj_id
    return area


def _draw_occluders(rng, img, ids, photos, lo, hi) -> None:
    """Unlabelled photo (or procedural) patches over some of the objects."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(0, 4))):
        size = float(np.exp(rng.uniform(lo, hi)))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        n = int(rng.choice([4, 5, 6]))
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        pts = np.stack([cx + np.cos(t) * size / 2, cy + np.sin(t) * size / 2 * rng.uniform(0.5, 1)], 1)
        x0, y0 = max(0, int(pts[:, 0].min()) - 2), max(0, int(pts[:, 1].min()) - 2)
        x1, y1 = min(w, int(pts[:, 0].max()) + 3), min(h, int(pts[:, 1].max()) + 3)
        if x1 - x0 < 3 or y1 - y0 < 3:
            continue
        mask = _render_mask((y1 - y0, x1 - x0), pts - np.array([x0, y0]), 0)
        _blend(img, mask, _texture(rng, photos, y1 - y0, x1 - x0).astype(np.float32), x0, y0)
        ids[y0:y1, x0:x1][mask > 127] = 0


def _visible_labels(ids: np.ndarray, drawn) -> list:
    """Boxes of the objects' visible pixels; mostly hidden objects are not labelled."""
    objects = []
    for obj_id, cls, area in drawn:
        ys, xs = np.nonzero(ids == obj_id)
        if len(xs) < MIN_VISIBLE * area or len(xs) < 6:
            continue
        bx1, by1, bx2, by2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        if bx2 - bx1 < 3 or by2 - by1 < 3:
            continue
        objects.append((cls, (float(bx1), float(by1), float(bx2), float(by2))))
    return objects


def _camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A little blur on some images, brightness / contrast jitter, sensor noise."""
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.0))
    img = (img - 128) * rng.uniform(0.8, 1.2) + 128 + rng.uniform(-20, 20)
    img += rng.normal(0, rng.uniform(2, 8), img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)
