"""Static INT8 quantization of an exported fp32 ONNX file, calibrated on real training images.

ONNX Runtime's own quantizer (``onnxruntime.quantization.quantize_static``) does the work:
QDQ format (QuantizeLinear/DequantizeLinear pairs that ORT fuses into integer kernels, and
that other runtimes read), per-channel int8 weights, uint8 activations, ranges calibrated
(min-max) on letterboxed images of the data YAML's *train* split -- the same letterbox and
scaling as inference (:class:`detector.inference.Predictor`). The prediction convs and the box
decoding after them stay float: their logits feed sigmoid and pixel coordinates, where 8-bit
steps cost AP, and they are a tiny share of the time.

Every channel concatenation (outside the float decode part) quantizes its inputs and its
output with one range, the union of their calibrated ranges (:func:`concat_range_overrides`).
ORT's ``QLinearConcat`` then copies bytes instead of re-quantizing each input through a
lookup table, which took 16% of the INT8 flagship's time with a range per tensor; dense
blocks chain their concatenations, so a whole chain shares one range.

The quantized file keeps the fp32 file's ``cspdet`` metadata (plus ``"int8": true`` and the
calibration set), so eval, demo and Predictor open it like any export.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import List, Optional

import numpy as np

from ..common import to_hw
from .onnx_export import read_metadata, write_metadata
from .onnx_runtime import global_thread_pool

log = logging.getLogger(__name__)


class QuantizationError(ValueError):
    """The model or the calibration data cannot be quantized; the message says why."""


def calibration_images(data, count: int, img_size, split: str = "train", seed: int = 0,
                       progress: bool = False) -> np.ndarray:
    """``count`` images of ``data``'s ``split``, letterboxed to ``img_size`` as inference does.

    Returns float32 (N, 3, H, W) RGB in [0, 1]. Images are drawn evenly spaced over the split
    (a fixed, reproducible sample that covers it); ``progress`` shows a progress bar.
    """
    from ..data import check_split_exists, letterbox, prepare_data, read_image
    from ..data.labels import list_images

    if count < 1:
        raise QuantizationError(f"calibration needs at least one image, got {count}")
    if data is None or data == "":
        raise QuantizationError("INT8 calibration needs images: give a data config (its "
                                f"{split} split is used)")
    try:
        cfg = prepare_data(data)
        split_cfg = check_split_exists(cfg, split)
    except (FileNotFoundError, KeyError, ValueError) as e:
        raise QuantizationError(f"cannot read calibration data from {data}: {e}") from e
    images = list_images(Path(split_cfg.images))
    if not images:
        raise QuantizationError(f"no images in the {split} split of {data} ({split_cfg.images})")
    idx = np.linspace(0, len(images) - 1, min(count, len(images))).round().astype(int)
    h, w = to_hw(img_size)
    batch = np.empty((len(idx), 3, h, w), np.float32)
    it = idx
    if progress:
        from tqdm import tqdm
        it = tqdm(idx, desc="calibration images", unit="img", leave=False)
    for k, i in enumerate(it):
        rgb = read_image(images[i])
        boxed, _, _ = letterbox(rgb, (h, w))
        batch[k] = boxed.transpose(2, 0, 1).astype(np.float32) / 255.0
    return batch


class _Reader:
    """``CalibrationDataReader`` over an array of inputs, one batch-1 feed at a time."""

    def __init__(self, name: str, batch: np.ndarray, session_batch: int):
        self.name, self.batch, self.session_batch, self.i = name, batch, session_batch, 0

    def get_next(self):
        if self.i >= len(self.batch):
            return None
        x = self.batch[self.i:self.i + 1]
        if self.session_batch > 1:  # fixed-batch export: repeat the image
            x = np.repeat(x, self.session_batch, axis=0)
        self.i += 1
        return {self.name: x}

    def rewind(self):
        self.i = 0


def calibration_array(calibration) -> np.ndarray:
    """``calibration`` as a float32 (N, 3, H, W) array; :class:`QuantizationError` if it is not one
    (every quantizer, ORT's and OpenVINO's, checks its inputs here)."""
    calibration = np.asarray(calibration, dtype=np.float32)
    if calibration.ndim != 4 or len(calibration) == 0:
        raise QuantizationError(f"calibration inputs must be a non-empty (N, 3, H, W) array, got "
                                f"shape {calibration.shape}")
    return calibration


def float_tail_nodes(model) -> List[str]:
    """The nodes to keep float: the prediction convs and everything after them (the box
    decoding of a decoded export), found by walking back from the graph outputs to the first
    Conv on each path. Pixel coordinates in 8 bits would cost more AP than they save time."""
    producer = {o: n for n in model.graph.node for o in n.output}
    keep, stack = {}, [o.name for o in model.graph.output]
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in keep:
            continue
        keep[node.name] = node
        if node.op_type != "Conv":
            stack.extend(node.input)
    return list(keep)


# ops whose output ORT's QDQ quantizer quantizes with its input's parameters
SAME_RANGE_OPS = ("MaxPool", "AveragePool", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
                  "Flatten", "Resize", "Slice", "Split", "Gather", "TopK")


def concat_range_groups(model, skip_nodes=()) -> List[List[str]]:
    """Tensors that must share one quantization range: the inputs and output of each Concat
    (outside ``skip_nodes``), merged where one concatenation feeds another, and through the
    ops that pass their input's range on (:data:`SAME_RANGE_OPS`, e.g. the stem's max-pool
    in front of its concat). Union-find over tensor names."""
    parent = {}

    def root(t):
        parent.setdefault(t, t)
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    skip = set(skip_nodes)
    concats = set()
    for node in model.graph.node:
        if node.name in skip:
            continue
        if node.op_type == "Concat":
            concats.add(node.output[0])
            linked = list(node.input) + list(node.output)
        elif node.op_type in SAME_RANGE_OPS and node.input:
            # the data input and output; not TopK / MaxPool indices (Split: every part)
            linked = node.input[:1] + (list(node.output) if node.op_type == "Split" else node.output[:1])
        else:
            continue
        for t in linked:
            parent[root(t)] = root(linked[0])
    groups = {}
    for t in parent:
        groups.setdefault(root(t), []).append(t)
    concat_roots = {root(t) for t in concats}
    return [g for r, g in groups.items() if r in concat_roots]


def concat_range_overrides(model_path: Path, reader, skip_nodes=()) -> dict:
    """``TensorQuantOverrides`` giving every calibrated tensor of a :func:`concat_range_groups`
    group the group's range. Costs one extra calibration pass over those ops' tensors (about
    as long as the quantizer's own); tensors the calibrator does not see (initializers,
    integer shapes) get no override."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    groups = concat_range_groups(onnx.load(str(model_path)), skip_nodes)
    if not groups:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        calibrator = create_calibrator(str(model_path), ["Concat", *SAME_RANGE_OPS],
                                       str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.MinMax)
        calibrator.collect_data(reader)
        ranges = calibrator.compute_data().data
    reader.rewind()
    overrides = {}
    for group in groups:
        known = [ranges[t].range_value for t in group if t in ranges]
        if not known:
            continue
        lo = np.float32(min(np.min(r[0]) for r in known))
        hi = np.float32(max(np.max(r[1]) for r in known))
        for t in group:
            if t in ranges:
                overrides[t] = [{"rmin": lo, "rmax": hi}]
    return overrides


def quantize_onnx(fp32_path, out_path, calibration: np.ndarray, per_channel: bool = True,
                  keep_outputs_float: bool = True, extra_meta: Optional[dict] = None) -> Path:
    """Quantize ``fp32_path`` statically (QDQ, int8 weights, uint8 activations) into ``out_path``.

    ``calibration``: float32 (N, 3, H, W) inputs (see :func:`calibration_images`).
    Raises :class:`QuantizationError` for a graph ORT cannot quantize (float16, NMS inside, no
    convolution) instead of failing inside the quantizer.
    """
    import onnx

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    model = onnx.load(str(fp32_path))
    meta = read_metadata(model)
    inp = model.graph.input[0]
    elem = inp.type.tensor_type.elem_type
    if elem != onnx.TensorProto.FLOAT:
        raise QuantizationError(f"{fp32_path.name}: INT8 quantization needs a float32 export "
                                f"(input type {onnx.TensorProto.DataType.Name(elem)}), not a float16 one")
    if meta.get("nms") or any(n.op_type == "NonMaxSuppression" for n in model.graph.node):
        raise QuantizationError(f"{fp32_path.name}: a graph with NMS inside cannot be quantized "
                                "statically (its outputs are box lists); export it without NMS")
    if not any(n.op_type in ("Conv", "MatMul", "Gemm") for n in model.graph.node):
        raise QuantizationError(f"{fp32_path.name}: no Conv/MatMul/Gemm to quantize")
    calibration = calibration_array(calibration)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    if dims[2:] != [None, None] and list(calibration.shape[2:]) != dims[2:]:
        raise QuantizationError(f"calibration images are {calibration.shape[2]}x{calibration.shape[3]}, "
                                f"the model takes {dims[2]}x{dims[3]}")
    exclude = float_tail_nodes(model) if keep_outputs_float else []
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if global_thread_pool() is not None:
        # ORT's quantizer opens its own sessions, which a process-wide thread pool refuses
        # ("use_per_session_threads must be false"): quantize in a fresh process instead
        _quantize_in_child(fp32_path, out_path, calibration, per_channel, keep_outputs_float)
    else:
        _quantize(fp32_path, out_path, calibration, per_channel, exclude, inp.name, dims[0] or 1)
    qmodel = onnx.load(str(out_path))
    if not meta:  # a foreign graph: nothing of cspdet's to carry over
        qmodel.producer_name = "cspdet"
        onnx.save(qmodel, str(out_path))
        return out_path
    return write_metadata(qmodel, dict(meta, int8=True, **(extra_meta or {})), out_path, check=False)


def _quantize_in_child(fp32_path, out_path, calibration, per_channel, keep_outputs_float) -> None:
    _run_child([(str(fp32_path), str(out_path), calibration)], per_channel, keep_outputs_float)
    if not Path(out_path).is_file():
        raise QuantizationError(f"quantizing {Path(fp32_path).name} in a child process failed "
                                "(its reason is in the log above)")


def _run_child(jobs, per_channel=True, keep_outputs_float=True) -> int:
    """Quantize ``jobs`` [(fp32, out, calibration)] in one fresh process (no global ORT pool)."""
    import multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        args = []
        for i, (src, dst, calib) in enumerate(jobs):
            np.save(Path(tmp) / f"{i}.npy", np.asarray(calib, np.float32))
            args.append((str(src), str(dst), str(Path(tmp) / f"{i}.npy")))
        proc = mp.get_context("spawn").Process(target=_child_main, args=(args, per_channel, keep_outputs_float))
        proc.start()
        proc.join()
        return proc.exitcode


def _child_main(jobs, per_channel, keep_outputs_float) -> None:
    for src, dst, calib in jobs:
        try:
            quantize_onnx(src, dst, np.load(calib), per_channel, keep_outputs_float)
        except QuantizationError as e:  # the caller sees the missing file
            log.warning("INT8: %s", e)


def quantize_many(jobs, per_channel: bool = True) -> List[Path]:
    """Quantize several files ``[(fp32, out, calibration)]``; returns the outputs written.

    With a process-wide ORT thread pool (the benchmark) all of them go through one child
    process, so the cost of starting it is paid once."""
    if global_thread_pool() is not None and jobs:
        _run_child(jobs, per_channel)
    else:
        for src, dst, calib in jobs:
            try:
                quantize_onnx(src, dst, calib, per_channel)
            except QuantizationError as e:  # the caller sees the missing file
                log.warning("INT8: %s", e)
    return [Path(dst) for _, dst, _ in jobs if Path(dst).is_file()]


def _quantize(fp32_path: Path, out_path: Path, calibration, per_channel, exclude, input_name,
              session_batch) -> None:
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        except Exception:  # pre-processing is an optimisation; quantize the file as it is
            pre = fp32_path
        reader = _Reader(input_name, calibration, session_batch)
        try:
            overrides = concat_range_overrides(pre, reader, exclude)
            quantize_static(str(pre), str(out_path), reader, quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_exclude=exclude,
                            extra_options={"TensorQuantOverrides": overrides})
        except Exception as e:
            raise QuantizationError(f"ONNX Runtime could not quantize {fp32_path.name}: "
                                    f"{type(e).__name__}: {e}") from e


__all__ = ["QuantizationError", "calibration_images", "concat_range_groups", "float_tail_nodes", "quantize_onnx",
           "quantize_many"]
