"""ONNX Runtime's own per-op profile: kernel time by op type, and the share of layout reorders
and pooling (what the deployed graph is tuned against, docs/deploy.md)."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Dict

import numpy as np

REORDER_OPS = ("ReorderInput", "ReorderOutput")
POOL_OPS = ("AveragePool", "MaxPool", "QLinearAveragePool", "NhwcMaxPool", "GlobalAveragePool")


def ort_profile(onnx_path: Path, size: int, threads: int, runs: int = 20) -> Dict[str, dict]:
    """ONNX Runtime's profiler on ``onnx_path``: per op type, kernel time share and nodes per run."""
    import onnxruntime as ort

    from ..export.onnx_runtime import session_options

    opts = session_options(threads)
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        batch = inp.shape[0] if isinstance(inp.shape[0], int) else 1
        x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
        for _ in range(runs):
            sess.run(None, {inp.name: x})
        with open(sess.end_profiling(), encoding="utf-8") as f:
            events = json.load(f)
    return kernel_time_by_op(events, runs)


def kernel_time_by_op(events, runs: int) -> Dict[str, dict]:
    """Profiler events -> {op: {share, nodes (per run), ms (per run)}}, largest share first."""
    total, nodes = {}, {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            total[op] = total.get(op, 0) + e["dur"]
            nodes[op] = nodes.get(op, 0) + 1
    t = sum(total.values()) or 1
    return {op: {"share": d / t, "nodes": nodes[op] // runs, "ms": d / runs / 1000}
            for op, d in sorted(total.items(), key=lambda kv: -kv[1])}


def share_of(profile: Dict[str, dict], ops) -> float:
    """The share of kernel time spent in ``ops`` (e.g. REORDER_OPS + POOL_OPS)."""
    return sum(v["share"] for k, v in profile.items() if k in ops)
