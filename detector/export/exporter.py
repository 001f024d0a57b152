"""One trained network -> its deployment files: one method per output, one file-naming rule.

:class:`Exporter` holds the network (a detector or a classifier), its class names and config,
and the export options; :meth:`~Exporter.onnx` (the detector graph), :meth:`~Exporter.int8`
(its statically quantized twin), :meth:`~Exporter.openvino` and :meth:`~Exporter.openvino_int8`
(the same graph as OpenVINO IR, fp32 and NNCF INT8) and :meth:`~Exporter.classifier` (a classifier's logits)
each write one file through the one metadata writer
(:func:`~detector.export.onnx_export.write_metadata`), and :meth:`~Exporter.check` compares a
written file with PyTorch (:mod:`.verify`). Loading the weights is the caller's business
(:mod:`detector.inference.weights`): this package depends on the models only.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
from torch import nn

from ..config import trained_img_size
from ..models.state_dict import CONF_KEY
from .onnx_export import EXPORTED_SECTIONS, export_classifier_onnx, export_onnx, read_metadata
from .quantize import calibration_images, quantize_onnx
from .verify import compare_classifier, compare_detector


@dataclass
class ExportOptions:
    """What the exported graph looks like (see :func:`~.onnx_export.export_onnx`).

    ``size``: (h, w), None = the size the weights were trained at.
    """
    size: Optional[Tuple[int, int]] = None
    batch: int = 1
    dynamic: bool = False
    nms: bool = False
    raw: bool = False
    half: bool = False
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    max_det: int = 100
    opset: int = 17
    device: str = "cpu"

    def describe(self) -> str:
        """The input shape part of the export tool's report: ``dynamic`` or ``320x320 batch 1``."""
        if self.dynamic:
            return "dynamic"
        return f"{self.size[0]}x{self.size[1]} batch {self.batch}"


def checkpoint_metadata(config: Mapping[str, Any], trained: int,
                        conf_thres_f1: Optional[float] = None) -> Dict[str, Any]:
    """What an exported file carries from its checkpoint besides the network: the trained size,
    the F1-optimal confidence (when the checkpoint stores one: inference's default threshold)
    and the data and eval sections, so that evaluating the file needs no data argument
    (JSON-safe values only; a section that is not is left out)."""
    meta: Dict[str, Any] = {"trained_img_size": trained}
    if conf_thres_f1 is not None:
        meta[CONF_KEY] = float(conf_thres_f1)
    for key in EXPORTED_SECTIONS:
        value = config.get(key)
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        if value:
            meta[key] = value
    return meta


def openvino_folder(onnx_path) -> Path:
    """Where an OpenVINO export of ``onnx_path`` goes by default: ``<stem>_openvino/`` beside it."""
    stem, _ = os.path.splitext(str(onnx_path))
    return Path(stem + "_openvino")


class Exporter:
    """Exports ``model`` (with ``names`` and the full ``config`` its weights came with, and the
    F1-optimal confidence its checkpoint stores, if any)."""

    def __init__(self, model: nn.Module, names: Sequence[str], config: Mapping[str, Any],
                 options: Optional[ExportOptions] = None, conf_thres_f1: Optional[float] = None):
        self.model, self.names, self.config = model, list(names), dict(config)
        self.conf_thres_f1 = conf_thres_f1
        self.trained_size = trained_img_size(self.config)
        options = options or ExportOptions()
        self.options = replace(options, size=tuple(options.size or (self.trained_size,) * 2))

    @property
    def size(self) -> Tuple[int, int]:
        return self.options.size

    def default_path(self, weights, shipped_config: bool = False) -> str:
        """Next to ``weights`` (in the working folder for a shipped config):
        ``<stem>_<size>[_dynamic][_nms|_raw][_fp16].onnx``."""
        o = self.options
        stem, _ = os.path.splitext(os.path.basename(weights) if shipped_config else str(weights))
        h, w = self.size
        suffix = f"_{h}" + (f"x{w}" if w != h else "")
        suffix += "_dynamic" if o.dynamic else ""
        suffix += "_nms" if o.nms else "_raw" if o.raw else ""
        suffix += "_fp16" if o.half else ""
        return stem + suffix + ".onnx"

    def metadata(self) -> Dict[str, Any]:
        """The checkpoint's part of every detector file's metadata (:func:`checkpoint_metadata`)."""
        return checkpoint_metadata(self.config, self.trained_size, self.conf_thres_f1)

    def onnx(self, path) -> Path:
        """The detector graph (decoded boxes, raw outputs or NMS inside, per the options)."""
        o = self.options
        return export_onnx(self.model, path, self.size, batch=o.batch, dynamic=o.dynamic, nms=o.nms,
                           raw=o.raw, half=o.half, conf_thres=o.conf_thres, iou_thres=o.iou_thres,
                           max_det=o.max_det, names=self.names, opset=o.opset, device=o.device,
                           extra_meta=self.metadata())

    def calibration(self, data, count: int, progress: bool = False) -> np.ndarray:
        """``count`` letterboxed images of ``data``'s train split at the export size."""
        return calibration_images(data, count, self.size, progress=progress)

    def int8(self, fp32_path, calibration: np.ndarray, data, out_path=None) -> Path:
        """The statically quantized twin of the fp32 file :meth:`onnx` wrote
        (``<name>_int8.onnx`` beside it unless ``out_path``); its metadata says what calibrated it."""
        out = out_path or os.path.splitext(str(fp32_path))[0] + "_int8.onnx"
        calib = {"data": str(data), "split": "train", "images": int(len(calibration))}
        return quantize_onnx(fp32_path, out, calibration, extra_meta={"calibration": calib})

    def openvino(self, onnx_path, folder=None) -> Path:
        """The fp32 file :meth:`onnx` wrote as OpenVINO IR (``<name>_openvino/model.xml``
        beside it unless ``folder``); returns the ``.xml``."""
        from .openvino_export import export_openvino

        return export_openvino(onnx_path, folder or openvino_folder(onnx_path))

    def openvino_int8(self, onnx_path, calibration: np.ndarray, data, folder=None) -> Path:
        """The NNCF-quantized INT8 twin of the fp32 file :meth:`onnx` wrote, as OpenVINO IR
        (``<name>_int8_openvino/model.xml`` beside it unless ``folder``)."""
        from .openvino_export import quantize_openvino

        calib = {"data": str(data), "split": "train", "images": int(len(calibration))}
        folder = folder or openvino_folder(os.path.splitext(str(onnx_path))[0] + "_int8.onnx")
        return quantize_openvino(onnx_path, folder, calibration, extra_meta={"calibration": calib})

    def classifier(self, path) -> Path:
        """A classifier's graph: input ``images``, output ``logits``."""
        o = self.options
        return export_classifier_onnx(self.model, path, self.size, o.batch, o.dynamic, o.opset, self.names,
                                      extra_meta={"model": self.config.get("model", {})})

    def check(self, path) -> str:
        """One line: how far a file written here is from PyTorch on a random input (an INT8
        file on a batch of one)."""
        o = self.options
        if str(path).endswith(".xml"):  # an OpenVINO export, compared in float32
            from .openvino_runtime import OpenVINODetector

            target = OpenVINODetector(path, precision="f32")  # a runner: compare_detector takes one
            meta = target.meta
        else:
            target, meta = path, read_metadata(path)
            if meta.get("task") == "classify":
                return compare_classifier(self.model, path, self.size)
        batch = 1 if o.dynamic or meta.get("int8") else o.batch
        return compare_detector(self.model, target, self.size, batch, o.conf_thres, o.iou_thres, o.max_det)
