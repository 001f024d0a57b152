"""Detector + letterbox + decode + NMS on BGR numpy images, on either backend.

Images are BGR numpy arrays as OpenCV reads them (grayscale HxW and BGRA are accepted), of any
size: each is letterboxed to ``img_size`` (:mod:`detector.data.letterbox`) and its boxes are
mapped back to its own pixels. The weights may be a checkpoint, a detector config (random
weights) or an exported ``.onnx`` file (ONNX Runtime): :func:`open_backend` picks the
:mod:`.backends` class once; the demo and eval run through the same pre-processing.

Input size, the one rule (:func:`detector.config.trained_img_size`): a checkpoint runs at the
size it was trained at (its ``train.img_size``) unless ``img_size`` is given; a fixed-size ONNX
file at its input size (another ``img_size`` is an error).
"""
from __future__ import annotations

import time
from typing import Dict, List, Mapping, Optional, Sequence, Union

import cv2
import numpy as np
import torch

from ..common import Size, to_hw
from ..config import ConfigError
from ..data.letterbox import letterbox, unletterbox_boxes
from ..export.openvino_export import is_openvino_path
from .backends import Backend, ExportedBackend, TorchBackend
from .confidence import describe_conf, pick_conf
from .weights import ONNX_SUFFIXES, Source, load_detector, resolve_weights


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


def open_backend(source: Source, device: str = "cpu", fuse: bool = True,
                 threads: Optional[int] = None, openvino_precision: Optional[str] = None) -> Backend:
    """``.onnx`` or an OpenVINO export (folder or ``.xml``) -> :class:`ExportedBackend`
    (``threads`` engine threads; ``openvino_precision``: OpenVINO's precision hint); a checkpoint or a
    config (by path or shipped name; random weights) -> :class:`TorchBackend` on ``device``,
    BatchNorm folded and re-parameterised when ``fuse``."""
    source = resolve_weights(source)
    if not isinstance(source, Mapping) and (source.suffix.lower() in ONNX_SUFFIXES or is_openvino_path(source)):
        return ExportedBackend.open(source, device, threads, openvino_precision)
    weights = load_detector(source)
    backend = TorchBackend(weights.model, weights.names, weights.config, device,
                           stored_conf=weights.conf_thres_f1)
    if fuse:
        backend.model.fuse()
    return backend


class Predictor:
    """Detector + letterbox + decode + NMS, on BGR numpy images::

        predictor = Predictor("runs/csppelee_efm_sam/best.pt")   # or .onnx, or a config
        dets = predictor(cv2.imread("image.jpg"))                 # {"boxes", "scores", "labels", "names"}

    ``runner`` is the :class:`~.backends.Backend` that runs the network; ``backend`` its name
    (``"pytorch"`` or ``"onnxruntime"``), ``model`` its network, ``config`` the full config
    the weights came with (for ONNX: the ``data`` and ``eval`` sections the export recorded,
    if any); ``img_size`` the input size (see the module docstring).

    ``conf_thres``: None = the F1-optimal confidence stored with the weights, else 0.25
    (:mod:`.confidence`); ``conf_source`` says which (``user``, ``stored`` or ``default``) and
    :meth:`describe_conf` says it in words.
    """

    def __init__(self, weights_or_cfg: Source, img_size: Optional[Size] = None, device: str = "cpu",
                 conf_thres: Optional[float] = None, iou_thres: float = 0.45, max_det: int = 300,
                 fuse: bool = True, threads: Optional[int] = None, openvino_precision: Optional[str] = None):
        self.iou_thres, self.max_det = iou_thres, max_det
        self.source = str(weights_or_cfg) if not isinstance(weights_or_cfg, Mapping) else "<config>"
        self.timing: Dict[str, float] = {"pre": 0.0, "model": 0.0, "post": 0.0}  # ms, last call
        self.runner = open_backend(weights_or_cfg, device, fuse, threads, openvino_precision)
        self.conf_thres, self.conf_source = pick_conf(conf_thres, self.runner.stored_conf)
        self.img_size = resolve_img_size(img_size, self.runner.trained_size, self.runner.fixed_size,
                                         self.source)

    @property
    def backend(self) -> str:
        return self.runner.name

    @property
    def weights_kind(self) -> str:
        """What holds the weights, in words: ``ONNX file``, ``OpenVINO file`` or ``checkpoint``."""
        return {"onnxruntime": "ONNX file", "openvino": "OpenVINO file"}.get(self.backend, "checkpoint")

    def describe_conf(self) -> str:
        """``conf 0.313 (F1-optimal on val, stored in the checkpoint)``, ``(yours)`` or ``(default...)``."""
        return describe_conf(self.conf_thres, self.conf_source, self.weights_kind)

    @property
    def model(self):
        """The network: a PyTorch detector or an exported file's runner (ONNX Runtime, OpenVINO)."""
        return self.runner.model

    @property
    def names(self) -> List[str]:
        return self.runner.names

    @property
    def config(self) -> Dict:
        return self.runner.config

    @property
    def device(self) -> torch.device:
        return self.runner.device

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
        """BGR images -> the backend's (B, 3, H, W) float RGB batch in [0, 1] plus each image's
        letterbox (a numpy array for ONNX Runtime, a tensor on the device for PyTorch)."""
        boxed, metas = [], []
        for img in images:
            img = self.to_bgr(img)
            if min(img.shape[:2]) < 1:
                raise ValueError(f"empty image of shape {img.shape}")
            out, ratio, pad = letterbox(img, self.img_size)
            boxed.append(out)
            metas.append((ratio, pad, img.shape[:2]))
        return self.runner.batch_from_letterboxed(boxed), metas

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
        out = self.runner.infer(x)  # "model": what runs in the network, decoding where the graph holds it
        t2 = time.perf_counter()
        dets = self.runner.boxes(out, self.conf_thres, self.iou_thres, self.max_det)
        results = []
        for det, (ratio, pad, shape) in zip(dets, metas):  # float32 boxes/scores, int64 labels
            results.append({"boxes": unletterbox_boxes(det["boxes"], ratio, pad, shape),
                            "scores": det["scores"], "labels": det["labels"],
                            "names": [self.names[i] for i in det["labels"]]})
        t3 = time.perf_counter()
        self.timing.update(pre=(t1 - t0) * 1e3, model=(t2 - t1) * 1e3, post=(t3 - t2) * 1e3)
        return results[0] if single else results
