"""OpenVINO exports: an exported fp32 ONNX file converted to OpenVINO IR, and its INT8 twin.

OpenVINO is Intel's CPU engine and reads our ONNX graph as it is (``openvino.convert_model``);
the IR (``model.xml`` + ``model.bin`` in one folder, weights kept float32) carries the same
``cspdet`` metadata as the ONNX file, in the model's ``rt_info``, so eval, predict, the demo
and :class:`~detector.inference.Predictor` open the folder like any export.

INT8 is NNCF's post-training quantization (``nncf.quantize``, the tool OpenVINO ships for it),
calibrated on the same letterboxed training images as the ONNX Runtime INT8 file
(:func:`~.quantize.calibration_images`). As there, the prediction convs and the box decoding
after them stay float (:func:`~.quantize.float_tail_nodes`): pixel coordinates in 8 bits
cost AP and are a tiny share of the time.

Optional: ``pip install cspdet[openvino]`` (openvino, nncf); without it these functions raise
:class:`OpenVINOUnavailableError`, whose message says how to install them.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from .onnx_export import METADATA_KEY, read_metadata
from .onnx_runtime import ModelFileError
from .quantize import QuantizationError, calibration_array, float_tail_nodes

log = logging.getLogger(__name__)

INSTALL_HINT = "OpenVINO is an optional extra: pip install 'cspdet[openvino]' (openvino, nncf)"
MODEL_FILE = "model.xml"


class OpenVINOUnavailableError(RuntimeError):
    """OpenVINO (or NNCF) is not installed; the message says how to install it."""


def import_openvino():
    """The ``openvino`` module, or :class:`OpenVINOUnavailableError`."""
    try:
        import openvino
    except ImportError as e:
        raise OpenVINOUnavailableError(INSTALL_HINT) from e
    return openvino


def model_file(path) -> Path:
    """The IR file of an OpenVINO export given as its folder or as the ``.xml`` itself."""
    path = Path(path)
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))
        if len(xmls) != 1:
            raise ModelFileError(f"{path}: an OpenVINO export folder holds one .xml model file, "
                                 f"found {len(xmls)}")
        return xmls[0]
    return path


def is_openvino_path(path) -> bool:
    """Whether ``path`` names an OpenVINO export: an ``.xml`` file or a folder holding one."""
    path = Path(path)
    return path.suffix.lower() == ".xml" or (path.is_dir() and any(path.glob("*.xml")))


def read_openvino_metadata(model) -> Dict[str, Any]:
    """The ``cspdet`` metadata of a read OpenVINO model (empty dict for a foreign one)."""
    if not model.has_rt_info([METADATA_KEY]):
        return {}
    return json.loads(model.get_rt_info([METADATA_KEY]).astype(str))


def _save(model, meta: Dict[str, Any], folder: Path) -> Path:
    """``model`` with ``meta`` as ``folder/model.xml`` (+ ``.bin``), written in a temporary
    folder and moved in place, so that a failed export leaves no half-written model."""
    ov = import_openvino()
    model.set_rt_info(json.dumps(meta), [METADATA_KEY])
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        ov.save_model(model, str(tmp / MODEL_FILE), compress_to_fp16=False)
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder / MODEL_FILE


def export_openvino(onnx_path, folder, extra_meta: Optional[Dict[str, Any]] = None) -> Path:
    """``onnx_path`` (an fp32 export of ours) as OpenVINO IR in ``folder``; returns the ``.xml``."""
    ov = import_openvino()
    meta = read_metadata(onnx_path)
    if meta.get("nms"):
        raise ValueError(f"{Path(onnx_path).name} has NMS inside; OpenVINO exports take the decoded "
                         "or raw graph (export without --nms)")
    model = ov.convert_model(str(onnx_path))
    return _save(model, dict(meta, engine="openvino", **(extra_meta or {})), Path(folder))


def ignored_tail(onnx_path, model) -> List[str]:
    """The OpenVINO operations that compute the ONNX graph's float tail (prediction convs and
    decoding), matched through the tensor names OpenVINO keeps from the ONNX file. An ONNX node
    may become several operations (a Conv with bias: Convolution, then Add); only the last
    carries the name, so unnamed producers of a matched operation are taken with it."""
    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    tail = set(float_tail_nodes(proto))
    tensors = {o for n in proto.graph.node if n.name in tail for o in n.output}
    found, stack = {}, [op for op in model.get_ops()
                        if any(tensors & set(out.get_names()) for out in op.outputs())]
    while stack:
        op = stack.pop()
        if op.get_friendly_name() in found or op.get_type_name() in ("Constant", "Parameter"):
            continue
        found[op.get_friendly_name()] = op
        for i in range(op.get_input_size()):
            src = op.input_value(i)
            if not src.get_names():  # made by the conversion of the same ONNX node
                stack.append(src.get_node())
    return list(found)


def quantize_openvino(onnx_path, folder, calibration: np.ndarray,
                      extra_meta: Optional[Dict[str, Any]] = None) -> Path:
    """The INT8 twin of ``onnx_path`` (an fp32 export) by NNCF post-training quantization,
    calibrated on ``calibration`` (float32 (N, 3, H, W) inputs), in ``folder``."""
    ov = import_openvino()
    try:
        import nncf
    except ImportError as e:
        raise OpenVINOUnavailableError(INSTALL_HINT) from e
    calibration = calibration_array(calibration)
    meta = read_metadata(onnx_path)
    if meta.get("nms"):
        raise QuantizationError(f"{Path(onnx_path).name}: a graph with NMS inside cannot be quantized "
                                "statically (its outputs are box lists); export it without NMS")
    model = ov.convert_model(str(onnx_path))
    batch = int(meta.get("batch") or 1)
    items = [calibration[i:i + batch] for i in range(0, len(calibration) - batch + 1, batch)] or [calibration[:1]]
    ignored = nncf.IgnoredScope(names=ignored_tail(onnx_path, model), validate=False)
    nncf_log = logging.getLogger("nncf")
    level = nncf_log.level
    nncf_log.setLevel(logging.WARNING)  # NNCF prints a line per step at INFO
    try:
        qmodel = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items), ignored_scope=ignored)
    except Exception as e:
        raise QuantizationError(f"NNCF could not quantize {Path(onnx_path).name}: {type(e).__name__}: {e}") from e
    finally:
        nncf_log.setLevel(level)
    return _save(qmodel, dict(meta, engine="openvino", int8=True, **(extra_meta or {})), Path(folder))
