"""Training and evaluation transforms.

Training (YOLO recipe, built from albumentations transforms):

* every image is first resized so its long side is the input size S (done by the dataset, so
  the RAM cache holds small images);
* mosaic: :func:`mosaic4` pastes 4 images into the S x S cells of a 2S x 2S canvas (each
  against the canvas centre, in a random cell), then ``A.RandomSizedCrop`` takes a square
  window of random side and position and resizes it to S: random object scale
  (``augment.scale``) and random translation in one resize;
* single image: padded to S x S, then ``A.Affine`` (scale, translate);
* then HSV jitter (:class:`HSVGain`: multiplicative value/saturation gains and a hue shift,
  the YOLO ``hsv_*`` semantics) and a horizontal flip (``A.HorizontalFlip``);
* optional mixup of two such samples (albumentations has no box-aware mixup; it is a blend and
  a concatenation);
* boxes are clipped and filtered by ``min_box_size`` and ``min_visibility`` by albumentations.

Why the mosaic paste is hand-written: albumentations' ``A.Mosaic`` (2.0.8) gives the same
layout but builds, validates and seeds a new ``Compose(LongestMaxSize, Crop)`` per cell on
every call and pads each cell separately; measured on coco128 (one process, 416) it cost
10-16 ms per sample, two thirds of the whole pipeline and more than Ultralytics' entire
sample. Pasting four already-resized images is four array copies (~1 ms at 640), so the
pipeline runs at Ultralytics' rate or better; everything after the paste (crop/scale,
flip, box clipping and filtering) stays albumentations'. The colour jitter is a small
albumentations transform of our own for the same reason: ``A.ColorJitter`` (the only
albumentations transform with multiplicative saturation/value gains) converts colour spaces
four times, ~10 ms per 640 x 640 sample, against ~0.5 ms for one colour matrix
(:class:`HSVGain`; Ultralytics' HSV lookup-table round trip takes ~4 ms).

Evaluation: :func:`detector.data.letterbox.letterbox` only.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import albumentations as A
import cv2
import numpy as np

from .config import AugmentConfig
from .letterbox import PAD_VALUE, letterbox

Sample = Tuple[np.ndarray, np.ndarray, np.ndarray]  # image HWC uint8, boxes (n,4) xyxy, classes (n,)


def resize_long_side(img: np.ndarray, size: int, fast: bool = False) -> Tuple[np.ndarray, float]:
    """Resize so that the long side is ``size``; returns the image and the scale.

    Shrinking uses INTER_AREA (best quality, for evaluation) unless ``fast``: training
    augmentation resamples the image again anyway, and INTER_LINEAR is ~5x cheaper (3.5 vs
    0.5 ms for 640x480 -> 416), as Ultralytics does for training.
    """
    h, w = img.shape[:2]
    r = size / max(h, w)
    if r != 1.0:
        interp = cv2.INTER_AREA if r < 1 and not fast else cv2.INTER_LINEAR
        img = cv2.resize(img, (max(1, round(w * r)), max(1, round(h * r))), interpolation=interp)
    return img, r


def eval_transform(img: np.ndarray, boxes: np.ndarray, size: int):
    """Letterbox to ``size``; boxes follow. Returns image, boxes, ratio, (left, top) pad."""
    out, ratio, pad = letterbox(img, size, color=PAD_VALUE)
    boxes = boxes.astype(np.float32, copy=True).reshape(-1, 4)
    if len(boxes):
        boxes[:, [0, 2]] = boxes[:, [0, 2]] * ratio + pad[0]
        boxes[:, [1, 3]] = boxes[:, [1, 3]] * ratio + pad[1]
    return out, boxes, ratio, pad


class HSVGain(A.ImageOnlyTransform):
    """YOLO colour jitter as one 3 x 3 colour matrix: hue rotated by up to ``hue`` of the
    colour circle, saturation and value multiplied by gains in ``[1 - saturation,
    1 + saturation]`` and ``[1 - value, 1 + value]``.

    The value gain is exact (V = max(R, G, B) scales with RGB); saturation is scaled about the
    luma grey, as ``A.ColorJitter``/torchvision do; the hue rotation turns colours about the
    grey axis (within a few HSV units of an HSV hue shift for YOLO's small ``hsv_h``). One
    ``cv2.transform`` (~0.5 ms per 640 x 640 image) replaces an RGB -> HSV -> RGB round trip
    (~4 ms, Ultralytics' way) or ``A.ColorJitter`` (~10 ms). An albumentations transform, so
    the Compose seeds it; ``A.HueSaturationValue`` adds shifts instead of gains.
    """

    LUMA = np.array([0.299, 0.587, 0.114])

    def __init__(self, hue: float = 0.015, saturation: float = 0.7, value: float = 0.4,
                 p: float = 0.5):
        super().__init__(p=p)
        for name, v in (("hue", hue), ("saturation", saturation), ("value", value)):
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"HSVGain: {name} must be in [0, 1], got {v}")
        self.hue, self.saturation, self.value = float(hue), float(saturation), float(value)

    def get_params(self):
        u = self.py_random.uniform
        return {"matrix": self.color_matrix(u(-self.hue, self.hue),
                                            1.0 + u(-self.saturation, self.saturation),
                                            1.0 + u(-self.value, self.value))}

    @classmethod
    def color_matrix(cls, hue_shift: float, sat_gain: float, val_gain: float) -> np.ndarray:
        """RGB -> RGB matrix: value gain x saturation about luma x hue rotation."""
        t = 2.0 * np.pi * hue_shift
        c, s = np.cos(t), np.sin(t)
        a, b = (1.0 - c) / 3.0, np.sqrt(1.0 / 3.0) * s
        rotate = np.array([[c + a, a - b, a + b], [a + b, c + a, a - b], [a - b, a + b, c + a]])
        saturate = sat_gain * np.eye(3) + (1.0 - sat_gain) * np.tile(cls.LUMA, (3, 1))
        return val_gain * saturate @ rotate

    def apply(self, img: np.ndarray, matrix=None, **params) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f"HSVGain needs an RGB uint8 image, got {img.dtype} {img.shape}")
        return img if matrix is None else cv2.transform(img, matrix)  # rounds and saturates

    def get_transform_init_args_names(self):
        return ("hue", "saturation", "value")


class TrainTransform:
    """Mosaic / single-image geometric augmentation + colour + flip (+ mixup) at size S."""

    def __init__(self, img_size: int, cfg: AugmentConfig, seed: int = 0):
        self.size = int(img_size)
        self.cfg = cfg
        S = self.size
        kmin, kmax = cfg.scale
        bbox_params = A.BboxParams(format="pascal_voc", label_fields=["class_labels"],
                                   min_width=cfg.min_box_size, min_height=cfg.min_box_size,
                                   min_visibility=cfg.min_visibility, clip=True,
                                   filter_invalid_bboxes=True,
                                   # filter once at the end: visibility = part of the final,
                                   # scaled box left inside the output (the YOLO rule), and
                                   # no per-transform checks (faster)
                                   check_each_transform=False)
        color = [HSVGain(hue=cfg.hsv_h, saturation=cfg.hsv_s, value=cfg.hsv_v, p=1.0)] \
            if (cfg.hsv_h or cfg.hsv_s or cfg.hsv_v) else []
        flip = [A.HorizontalFlip(p=cfg.fliplr)] if cfg.fliplr > 0 else []
        # object scale k = S / side of the crop window on the 2S x 2S grid
        side_min = max(8, int(round(S / kmax)))
        side_max = max(side_min, min(2 * S, int(round(S / kmin))))
        self.rng = np.random.default_rng(seed)  # mosaic cell order
        # built once: per-sample construction (validation, seeding) is what made A.Mosaic slow
        self.mosaic = A.Compose([
            A.RandomSizedCrop(min_max_height=(side_min, side_max), size=(S, S), w2h_ratio=1.0, p=1.0),
            *color, *flip], bbox_params=bbox_params, seed=seed)
        self.single = A.Compose([
            A.PadIfNeeded(min_height=S, min_width=S, position="center",
                          border_mode=cv2.BORDER_CONSTANT, fill=PAD_VALUE),
            A.Affine(scale=(kmin, kmax), translate_percent=(-cfg.translate, cfg.translate),
                     border_mode=cv2.BORDER_CONSTANT, fill=PAD_VALUE, p=1.0),
            *color, *flip], bbox_params=bbox_params, seed=seed)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.mosaic.set_random_seed(seed)
        self.single.set_random_seed(seed + 1)

    def __call__(self, primary: Sample, partners: Optional[Sequence[Sample]] = None) -> Sample:
        """One augmented sample; ``partners`` (3 samples) switch mosaic on."""
        img, boxes, classes = primary
        if partners:
            if len(partners) != 3:
                raise ValueError(f"mosaic needs 3 partner samples, got {len(partners)}")
            img, boxes, classes = mosaic4([primary, *partners], self.size, self.rng)
            out = self.mosaic(image=img, bboxes=boxes, class_labels=classes.tolist())
        else:
            out = self.single(image=img, bboxes=_boxes(boxes), class_labels=classes.tolist())
        return (out["image"], np.asarray(out["bboxes"], np.float32).reshape(-1, 4),
                np.asarray(out["class_labels"], np.int64).reshape(-1))


def mosaic4(samples: Sequence[Sample], size: int, rng: np.random.Generator,
            fill: int = PAD_VALUE) -> Sample:
    """Paste 4 samples into the S x S cells of a 2S x 2S canvas filled with ``fill``.

    Each image is fitted to long side S (a no-op for the dataset's pre-resized images) and
    put against the canvas centre, so the four meet in the middle and the padding lies at the
    outer edges (the layout of ``A.Mosaic(grid_yx=(2, 2), fit_mode="contain")`` and of the
    YOLO mosaic); which sample goes to which cell is random. Boxes are shifted with their
    image; the caller clips and filters them.
    """
    S = int(size)
    canvas = np.full((2 * S, 2 * S, 3), fill, np.uint8)
    all_boxes, all_classes = [], []
    for cell, k in enumerate(rng.permutation(4)):
        img, boxes, classes = samples[int(k)]
        boxes = _boxes(boxes)
        if max(img.shape[:2]) != S:
            img, r = resize_long_side(img, S)
            boxes = boxes * r
        if img.ndim == 2:
            img = img[..., None]
        h, w = img.shape[:2]
        x0 = S - w if cell % 2 == 0 else S      # left column: right-aligned to the centre
        y0 = S - h if cell < 2 else S           # top row: bottom-aligned to the centre
        canvas[y0:y0 + h, x0:x0 + w] = img
        all_boxes.append(boxes + np.array([x0, y0, x0, y0], np.float32))
        all_classes.append(np.asarray(classes, np.int64).reshape(-1))
    return canvas, np.concatenate(all_boxes, 0), np.concatenate(all_classes, 0)


def mixup(a: Sample, b: Sample, rng: np.random.Generator, alpha: float = 32.0) -> Sample:
    """Blend two augmented samples (ratio ~ Beta(alpha, alpha)) and keep both sets of boxes."""
    r = float(rng.beta(alpha, alpha))
    img = (a[0].astype(np.float32) * r + b[0].astype(np.float32) * (1.0 - r) + 0.5).astype(np.uint8)
    return img, np.concatenate([a[1], b[1]], 0), np.concatenate([a[2], b[2]], 0)


def _boxes(boxes: np.ndarray) -> np.ndarray:
    return np.asarray(boxes, np.float32).reshape(-1, 4)
