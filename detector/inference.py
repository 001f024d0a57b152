"""Inference in three lines::

    from detector.inference import Predictor
    predictor = Predictor("runs/csppelee_efm_sam/best.pt")     # or a detector config (random weights)
    dets = predictor(cv2.imread("image.jpg"))                   # {"boxes", "scores", "labels", "names"}

Images are BGR numpy arrays as OpenCV reads them (grayscale HxW and BGRA are accepted), of any
size: each is letterboxed to ``img_size`` (:mod:`detector.data.letterbox`) and its boxes are
mapped back to its own pixels.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import cv2
import numpy as np
import torch

from .config import ConfigError, load_config
from .data.letterbox import letterbox, unletterbox_boxes
from .engine.checkpoint import load_checkpoint, load_state_strict, model_state
from .models.detector import REPO_ROOT, build_detector
from .models.postprocess import postprocess

Source = Union[str, os.PathLike, Mapping]


def _data_names(cfg: Mapping) -> Optional[List[str]]:
    """Class names of the config's data section (path or mapping), or None when unavailable."""
    data = cfg.get("data")
    if data is None:
        return None
    if isinstance(data, (str, os.PathLike)) and not Path(data).is_file() and (REPO_ROOT / data).is_file():
        data = str(REPO_ROOT / data)
    try:
        from .data import load_data_config

        return [str(n) for n in load_data_config(data).names]
    except Exception:  # missing file or malformed data section: the model's numbering will do
        return None


class Predictor:
    """Detector + letterbox + decode + NMS, on BGR numpy images."""

    def __init__(self, weights_or_cfg: Source, img_size: int = 320, device: str = "cpu",
                 conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 300,
                 fuse: bool = True):
        self.device = torch.device(device)
        self.img_size = int(img_size)
        self.conf_thres, self.iou_thres, self.max_det = conf_thres, iou_thres, max_det
        is_ckpt = (not isinstance(weights_or_cfg, Mapping)
                   and Path(weights_or_cfg).suffix.lower() in (".pt", ".pth"))
        if is_ckpt:
            ckpt = load_checkpoint(weights_or_cfg)
            cfg = ckpt.get("config") or {}
            if not isinstance(cfg.get("model"), Mapping):
                raise ConfigError(f"checkpoint {weights_or_cfg} holds no model config "
                                  "(ckpt['config']['model']); was it written by the trainer?")
            self.model = build_detector(cfg["model"])
            load_state_strict(self.model, model_state(ckpt), what=str(weights_or_cfg))
            names = ckpt.get("names") or _data_names(cfg)
            if not names or len(names) != self.model.num_classes:
                names = [str(i) for i in range(self.model.num_classes)]
            self.names = [str(n) for n in names]
        else:  # a config: random weights, classes from its data section as in training
            cfg = load_config(weights_or_cfg)
            model_cfg = dict(cfg["model"] if "model" in cfg else cfg)
            names = _data_names(cfg)
            if names:
                model_cfg["num_classes"] = len(names)
            self.model = build_detector(model_cfg)
            self.names = names or [str(i) for i in range(self.model.num_classes)]
        if len(self.names) != self.model.num_classes:
            raise ConfigError(f"{len(self.names)} class names for a model of "
                              f"{self.model.num_classes} classes")
        self.model.to(self.device).eval()
        if fuse:
            self.model.fuse()

    @staticmethod
    def to_bgr(img: np.ndarray) -> np.ndarray:
        """Grayscale (HxW or HxWx1) and BGRA -> 3-channel BGR uint8; anything else is refused."""
        if not isinstance(img, np.ndarray):
            raise TypeError(f"expected a numpy image (as cv2.imread returns), got {type(img).__name__}")
        if img.dtype != np.uint8:
            if np.issubdtype(img.dtype, np.floating) and img.size and img.max() <= 1.0:
                img = img * 255.0
            img = np.clip(img, 0, 255).astype(np.uint8)
        if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
            return cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
        if img.ndim == 3 and img.shape[2] == 4:
            return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        if img.ndim == 3 and img.shape[2] == 3:
            return img
        raise ValueError(f"unsupported image shape {img.shape}: expected HxW, HxWx3 (BGR) or HxWx4 (BGRA)")

    def preprocess(self, images: Sequence[np.ndarray]):
        """BGR images -> (B, 3, S, S) float RGB batch in [0, 1] plus each image's letterbox."""
        batch, metas = [], []
        for img in images:
            img = self.to_bgr(img)
            if min(img.shape[:2]) < 1:
                raise ValueError(f"empty image of shape {img.shape}")
            boxed, ratio, pad = letterbox(img, self.img_size)
            rgb = np.ascontiguousarray(boxed[..., ::-1].transpose(2, 0, 1))
            batch.append(torch.from_numpy(rgb))
            metas.append((ratio, pad, img.shape[:2]))
        x = torch.stack(batch).to(self.device, non_blocking=True).float().div_(255.0)
        return x, metas

    @torch.no_grad()
    def __call__(self, images: Union[np.ndarray, Sequence[np.ndarray]]
                 ) -> Union[Dict[str, np.ndarray], List[Dict[str, np.ndarray]]]:
        """One image -> one dict; a list -> a list of dicts. Boxes are xyxy original pixels."""
        single = isinstance(images, np.ndarray)
        images = [images] if single else list(images)
        if not images:
            return []
        x, metas = self.preprocess(images)
        decoded = self.model.decode(self.model(x))
        dets = postprocess(decoded, self.conf_thres, self.iou_thres, self.max_det)
        results = []
        for det, (ratio, pad, shape) in zip(dets, metas):
            boxes = unletterbox_boxes(det["boxes"].float().cpu(), ratio, pad, shape).numpy()
            labels = det["labels"].cpu().numpy()
            results.append({"boxes": boxes.astype(np.float32),
                            "scores": det["scores"].float().cpu().numpy(),
                            "labels": labels.astype(np.int64),
                            "names": [self.names[i] for i in labels]})
        return results[0] if single else results
