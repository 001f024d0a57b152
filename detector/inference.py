"""Inference in three lines::

    from detector.inference import Predictor
    predictor = Predictor("runs/csppelee_efm_sam/best.pt")     # or a detector config (random weights)
    dets = predictor(cv2.imread("image.jpg"))                   # {"boxes", "scores", "labels", "names"}

Images are BGR numpy arrays as OpenCV reads them (grayscale HxW and BGRA are accepted), of any
size: each is letterboxed to ``img_size`` (:mod:`detector.data.letterbox`) and its boxes are
mapped back to its own pixels. The weights may be a checkpoint, a detector config (random
weights) or an exported ``.onnx`` file (ONNX Runtime); the demo and eval run through the same
pre-processing.

Input size, the one rule (:func:`detector.config.trained_img_size`): a checkpoint runs at the
size it was trained at (its ``train.img_size``) unless ``img_size`` is given; a fixed-size ONNX
file at its input size (another ``img_size`` is an error).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import cv2
import numpy as np
import torch

from .common import Size, to_hw
from .config import ConfigError, load_config, trained_img_size
from .data.letterbox import letterbox, unletterbox_boxes
from .engine.checkpoint import load_checkpoint, load_state_strict, model_state
from .export.onnx_export import EXPORTED_SECTIONS
from .models.detector import build_detector
from .models.postprocess import postprocess, postprocess_numpy

Source = Union[str, os.PathLike, Mapping]


def _data_names(cfg: Mapping) -> Optional[List[str]]:
    """Class names of the config's data section (a path or name resolved by find_config, or a
    mapping), or None when unavailable."""
    data = cfg.get("data")
    if data is None:
        return None
    try:
        from .data import load_data_config

        return [str(n) for n in load_data_config(data).names]
    except Exception:  # missing file or malformed data section: the model's numbering will do
        return None


ONNX_SUFFIXES = (".onnx",)
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def resolve_img_size(requested: Optional[Size], trained: Size, fixed: Optional[Sequence[int]] = None,
                     source: str = "the model") -> Size:
    """The input size a model runs at: ``fixed`` (an ONNX file's (h, w)) when it has one, else
    ``requested``, else ``trained``. A request that a fixed-size file cannot take is an error."""
    if fixed:
        h, w = (int(v) for v in fixed)
        if requested is not None and to_hw(requested) != (h, w):
            raise ConfigError(f"{source} was exported for {h}x{w} input; use that size "
                              "(or leave it out) or export with --dynamic")
        return h if h == w else (h, w)
    return requested if requested is not None else trained


class Predictor:
    """Detector + letterbox + decode + NMS, on BGR numpy images.

    ``backend`` is ``"pytorch"`` or ``"onnxruntime"``; ``config`` the full config the weights
    came with (for ONNX: the ``data`` and ``eval`` sections the export recorded, if any);
    ``img_size`` the input size (see the module docstring).
    """

    def __init__(self, weights_or_cfg: Source, img_size: Optional[Size] = None, device: str = "cpu",
                 conf_thres: float = 0.25, iou_thres: float = 0.45, max_det: int = 300,
                 fuse: bool = True, threads: Optional[int] = None):
        self.device = torch.device(device)
        self.conf_thres, self.iou_thres, self.max_det = conf_thres, iou_thres, max_det
        self.source = str(weights_or_cfg) if not isinstance(weights_or_cfg, Mapping) else "<config>"
        suffix = "" if isinstance(weights_or_cfg, Mapping) else Path(weights_or_cfg).suffix.lower()
        self.config: Dict = {}
        self.timing: Dict[str, float] = {"pre": 0.0, "model": 0.0, "post": 0.0}  # ms, last call
        fixed = None
        if suffix in ONNX_SUFFIXES:
            from .export.onnx_runtime import ONNXRuntimeDetector

            providers = ["CPUExecutionProvider"]
            if self.device.type == "cuda":
                providers.insert(0, "CUDAExecutionProvider")
            self.backend = "onnxruntime"
            self.model = ONNXRuntimeDetector(weights_or_cfg, threads=threads, providers=providers)
            self.device = torch.device("cpu")  # ONNX Runtime takes host arrays
            self.names = list(self.model.names)
            fixed = self.model.img_size
            trained = int(self.model.meta.get("trained_img_size") or trained_img_size({}))
            # the checkpoint's data and eval sections, as the export recorded them (eval's defaults)
            self.config = {k: self.model.meta[k] for k in EXPORTED_SECTIONS if self.model.meta.get(k)}
        else:
            self.backend = "pytorch"
            if suffix in CHECKPOINT_SUFFIXES:
                self._load_checkpoint(weights_or_cfg)
            else:  # a config: random weights, classes from its data section as in training
                self._load_config(weights_or_cfg)
            if len(self.names) != self.model.num_classes:
                raise ConfigError(f"{len(self.names)} class names for a model of "
                                  f"{self.model.num_classes} classes")
            self.model.to(self.device).eval()
            if fuse:
                self.model.fuse()
            trained = trained_img_size(self.config)
        self.img_size = resolve_img_size(img_size, trained, fixed, self.source)

    def _load_checkpoint(self, path) -> None:
        ckpt = load_checkpoint(path)
        cfg = ckpt.get("config") or {}
        if not isinstance(cfg.get("model"), Mapping):
            raise ConfigError(f"checkpoint {path} holds no model config "
                              "(ckpt['config']['model']); was it written by the trainer?")
        self.config = dict(cfg)
        self.model = build_detector(cfg["model"])
        load_state_strict(self.model, model_state(ckpt), what=str(path))
        names = ckpt.get("names") or _data_names(cfg)
        if not names or len(names) != self.model.num_classes:
            names = [str(i) for i in range(self.model.num_classes)]
        self.names = [str(n) for n in names]

    def _load_config(self, cfg_source) -> None:
        cfg = load_config(cfg_source)
        self.config = dict(cfg)
        model_cfg = dict(cfg["model"] if "model" in cfg else cfg)
        names = _data_names(cfg)
        if names:
            model_cfg["num_classes"] = len(names)
        self.model = build_detector(model_cfg)
        self.names = names or [str(i) for i in range(self.model.num_classes)]

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
        """BGR images -> (B, 3, H, W) float RGB batch in [0, 1] plus each image's letterbox.

        The batch is a numpy array for ONNX Runtime (``cv2.dnn.blobFromImages`` swaps channels,
        transposes and scales in one pass, and no torch op runs) and a tensor on the device for
        PyTorch (uint8 crosses to the device, then it is scaled there).
        """
        boxed, metas = [], []
        for img in images:
            img = self.to_bgr(img)
            if min(img.shape[:2]) < 1:
                raise ValueError(f"empty image of shape {img.shape}")
            out, ratio, pad = letterbox(img, self.img_size)
            boxed.append(out)
            metas.append((ratio, pad, img.shape[:2]))
        if self.backend == "onnxruntime":
            return cv2.dnn.blobFromImages(boxed, 1.0 / 255.0, swapRB=True), metas
        rgb = np.stack([b[..., ::-1].transpose(2, 0, 1) for b in boxed])
        x = torch.from_numpy(rgb).to(self.device, non_blocking=True).float().div_(255.0)
        return x, metas

    def _predict(self, x) -> List[Dict[str, np.ndarray]]:
        """Network and post-processing; fills ``timing["model"]`` (what runs in the network,
        decoding included where the graph holds it) and ``timing["post"]`` starts after it."""
        t0 = time.perf_counter()
        if self.backend == "pytorch":
            decoded = self.model.decode(self.model(x))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.timing["model"] = (time.perf_counter() - t0) * 1e3
            dets = postprocess(decoded.float(), self.conf_thres, self.iou_thres, self.max_det)
            return [{k: v.float().cpu().numpy() if k != "labels" else v.cpu().numpy() for k, v in d.items()}
                    for d in dets]
        if self.model.has_nms:  # decode and NMS run in the graph
            dets = self.model.predict(x, self.conf_thres)
            self.timing["model"] = (time.perf_counter() - t0) * 1e3
            return dets
        decoded = self.model.decoded(x)
        self.timing["model"] = (time.perf_counter() - t0) * 1e3
        return postprocess_numpy(decoded, self.conf_thres, self.iou_thres, self.max_det)

    @torch.no_grad()
    def __call__(self, images: Union[np.ndarray, Sequence[np.ndarray]]
                 ) -> Union[Dict[str, np.ndarray], List[Dict[str, np.ndarray]]]:
        """One image -> one dict; a list -> a list of dicts. Boxes are xyxy original pixels.

        ``timing`` then holds the call's ``pre``, ``model`` and ``post`` milliseconds.
        """
        single = isinstance(images, np.ndarray)
        images = [images] if single else list(images)
        if not images:
            return []
        t0 = time.perf_counter()
        x, metas = self.preprocess(images)
        t1 = time.perf_counter()
        dets = self._predict(x)
        results = []
        for det, (ratio, pad, shape) in zip(dets, metas):  # float32 boxes/scores, int64 labels
            results.append({"boxes": unletterbox_boxes(det["boxes"], ratio, pad, shape),
                            "scores": det["scores"], "labels": det["labels"],
                            "names": [self.names[i] for i in det["labels"]]})
        t3 = time.perf_counter()
        self.timing["pre"] = (t1 - t0) * 1e3
        self.timing["post"] = (t3 - t1) * 1e3 - self.timing["model"]
        return results[0] if single else results
