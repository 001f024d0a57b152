"""The benchmark's INT8 files: statically quantized twins of its fp32 exports, for ONNX Runtime
(QDQ) and for OpenVINO (NNCF)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np


def int8_path(fp32: Path) -> Path:
    return fp32.with_name(fp32.stem + "_int8.onnx")


def int8_files(jobs: List[Tuple[Path, int]]) -> Dict[Path, Path]:
    """Statically quantized twins of fp32 files ``[(path, size)]`` (calibrated on 4 random
    inputs: for timing only, speed does not depend on the ranges), all in one go; a twin newer
    than its fp32 file is kept. Returns {fp32: int8} for those written."""
    from ..export.quantize import quantize_many

    todo, out = [], {}
    for fp32, size in jobs:
        q = int8_path(fp32)
        out[fp32] = q
        if not q.is_file() or q.stat().st_mtime < fp32.stat().st_mtime:
            todo.append((fp32, q, np.random.default_rng(0).random((4, 3, size, size), dtype=np.float32)))
    quantize_many(todo)
    return {k: v for k, v in out.items() if v.is_file()}


def openvino_int8_path(fp32: Path) -> Path:
    return fp32.with_name(fp32.stem + "_int8_openvino") / "model.xml"


def openvino_int8_files(jobs: List[Tuple[Path, int]]) -> Dict[Path, Path]:
    """NNCF-quantized OpenVINO twins of fp32 files ``[(path, size)]`` (4 random calibration
    inputs, as :func:`int8_files`); a twin newer than its fp32 file is kept. Returns
    {fp32: model.xml} for those written; one that fails is left out (logged)."""
    import logging

    from ..export.openvino_export import quantize_openvino

    out = {}
    for fp32, size in jobs:
        q = openvino_int8_path(fp32)
        if not q.is_file() or q.stat().st_mtime < fp32.stat().st_mtime:
            try:
                quantize_openvino(fp32, q.parent, np.random.default_rng(0).random((4, 3, size, size), dtype=np.float32))
            except Exception as e:  # reported as a missing cell, not a crashed benchmark
                logging.getLogger(__name__).warning("OpenVINO INT8 of %s failed: %s", fp32.name, e)
                continue
        out[fp32] = q
    return out
