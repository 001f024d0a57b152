"""OpenVINO's own per-operation profile (``PERF_COUNT``): where a compiled graph spends its time,
by layer type and by the kernel OpenVINO picked (``exec_type``, e.g. ``brgconv_avx512_amx_bf16``
or ``ref_any``), so that a slow graph shows which of its operations run outside the fast paths."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np


def openvino_profile(path: Path, size: int, threads: int, runs: int = 20) -> Dict[str, dict]:
    """OpenVINO's profiler on ``path`` (an ONNX file or an IR ``.xml``), default precision:
    per ``"layer type / kernel"``, the share of executed time, nodes per run and ms per run."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True,
                                                        "INFERENCE_NUM_THREADS": int(threads)})
    request = compiled.create_infer_request()
    shape = compiled.inputs[0].get_partial_shape()
    batch = shape[0].get_length() if shape[0].is_static else 1
    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    total: Dict[str, float] = {}
    nodes: Dict[str, int] = {}
    for _ in range(runs):
        request.infer({0: x})
        for info in request.get_profiling_info():
            if info.status != info.Status.EXECUTED:
                continue
            key = f"{info.node_type} / {info.exec_type}"
            total[key] = total.get(key, 0.0) + info.real_time.total_seconds()
            nodes[key] = nodes.get(key, 0) + 1
    t = sum(total.values()) or 1.0
    return {k: {"share": v / t, "nodes": nodes[k] // runs, "ms": 1000 * v / runs}
            for k, v in sorted(total.items(), key=lambda kv: -kv[1])}
