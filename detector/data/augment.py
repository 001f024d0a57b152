"""Training and evaluation transforms.

Training (YOLO recipe, built from albumentations transforms):

* every image is first resized so its long side is the input size S (done by the dataset, so
  the RAM cache holds small images);
* mosaic: ``A.Mosaic`` puts 4 images in the cells of a 2S x 2S grid, then
  ``A.RandomSizedCrop`` takes a square window of random side and position and resizes it to
  S: random object scale (``augment.scale``) and random translation in one resize;
* single image: padded to S x S, then ``A.Affine`` (scale, translate);
* then HSV jitter (``A.ColorJitter``: multiplicative value/saturation gains and a hue shift,
  the YOLO ``hsv_*`` semantics) and a horizontal flip;
* optional mixup of two such samples (albumentations has no box-aware mixup; it is a blend and
  a concatenation);
* boxes are clipped and filtered by ``min_box_size`` and ``min_visibility`` by albumentations.

Evaluation: :func:`detector.data.letterbox.letterbox` only.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import albumentations as A
import cv2
import numpy as np

from .config import AugmentConfig
from .letterbox import letterbox

PAD_VALUE = 114
Sample = Tuple[np.ndarray, np.ndarray, np.ndarray]  # image HWC uint8, boxes (n,4) xyxy, classes (n,)


def resize_long_side(img: np.ndarray, size: int) -> Tuple[np.ndarray, float]:
    """Resize so that the long side is ``size``; returns the image and the scale."""
    h, w = img.shape[:2]
    r = size / max(h, w)
    if r != 1.0:
        interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
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
        # Albumentations' own HSV transform adds shifts; ColorJitter multiplies (YOLO's gains).
        color = [A.ColorJitter(brightness=cfg.hsv_v, contrast=0.0, saturation=cfg.hsv_s,
                               hue=min(cfg.hsv_h, 0.5), p=1.0)] \
            if (cfg.hsv_h or cfg.hsv_s or cfg.hsv_v) else []
        flip = [A.HorizontalFlip(p=cfg.fliplr)] if cfg.fliplr > 0 else []
        # object scale k = S / side of the crop window on the 2S x 2S grid
        side_min = max(8, int(round(S / kmax)))
        side_max = max(side_min, min(2 * S, int(round(S / kmin))))
        self.mosaic = A.Compose([
            A.Mosaic(grid_yx=(2, 2), target_size=(2 * S, 2 * S), cell_shape=(S, S),
                     fit_mode="contain", fill=PAD_VALUE, metadata_key="mosaic_metadata", p=1.0),
            A.RandomSizedCrop(min_max_height=(side_min, side_max), size=(S, S), w2h_ratio=1.0, p=1.0),
            *color, *flip], bbox_params=bbox_params, seed=seed)
        self.single = A.Compose([
            A.PadIfNeeded(min_height=S, min_width=S, position="center",
                          border_mode=cv2.BORDER_CONSTANT, fill=PAD_VALUE),
            A.Affine(scale=(kmin, kmax), translate_percent=(-cfg.translate, cfg.translate),
                     border_mode=cv2.BORDER_CONSTANT, fill=PAD_VALUE, p=1.0),
            *color, *flip], bbox_params=bbox_params, seed=seed)

    def reseed(self, seed: int) -> None:
        self.mosaic.set_random_seed(seed)
        self.single.set_random_seed(seed + 1)

    def __call__(self, primary: Sample, partners: Optional[Sequence[Sample]] = None) -> Sample:
        """One augmented sample; ``partners`` (3 samples) switch mosaic on."""
        img, boxes, classes = primary
        if partners:
            meta = [{"image": p[0], "bboxes": _boxes(p[1]), "class_labels": p[2].tolist()}
                    for p in partners]
            out = self.mosaic(image=img, bboxes=_boxes(boxes), class_labels=classes.tolist(),
                              mosaic_metadata=meta)
        else:
            out = self.single(image=img, bboxes=_boxes(boxes), class_labels=classes.tolist())
        return (out["image"], np.asarray(out["bboxes"], np.float32).reshape(-1, 4),
                np.asarray(out["class_labels"], np.int64).reshape(-1))


def mixup(a: Sample, b: Sample, rng: np.random.Generator, alpha: float = 32.0) -> Sample:
    """Blend two augmented samples (ratio ~ Beta(alpha, alpha)) and keep both sets of boxes."""
    r = float(rng.beta(alpha, alpha))
    img = (a[0].astype(np.float32) * r + b[0].astype(np.float32) * (1.0 - r) + 0.5).astype(np.uint8)
    return img, np.concatenate([a[1], b[1]], 0), np.concatenate([a[2], b[2]], 0)


def _boxes(boxes: np.ndarray) -> np.ndarray:
    return np.asarray(boxes, np.float32).reshape(-1, 4)
