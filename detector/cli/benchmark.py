#!/usr/bin/env python
"""Speed of our detectors beside modern peers, and the CSPNet paper's claims on our models.

    python tools/benchmark.py                                   # full run, writes benchmarks/RESULTS.md
    python tools/benchmark.py --quick                           # fewer iterations
    python tools/benchmark.py --configs configs/csppelee_efm_sam.yaml --sizes 320 --no-peers --pairs none

For every model and input size: parameters, GFLOPs (torch.utils.flop_counter, multiply-add =
2), peak activation memory (PyTorch), latency at batch 1 (median after warm-up) and throughput
at batch ``--throughput-batch`` in PyTorch, ONNX Runtime and OpenCV DNN, all with ``--threads``
threads. Within an engine the models are timed alternately, round after round, so that load
from other processes hits them all alike; engines run one after another (their idle thread
pools would otherwise slow each other down), and ONNX Runtime sessions share one global
thread pool; so ORT's fp32 and INT8 files are timed in the same rounds, and the INT8 ratios
compare runs made at the same moment. Models are timed in alternating *blocks* of
back-to-back runs (``--block`` runs of one model, then of the next, ``--iters`` rounds): one
call at a time interleaved would measure small models with cold caches. Each cell is the
median over rounds, with the spread (min-max of the round medians); ratios are taken per
round, in the same run.
Peers (Ultralytics YOLOv8n, YOLO11n, YOLO26n, YOLOv3-tiny) are built from Ultralytics'
yaml files with random weights -- nothing is downloaded -- and timed through the graph
Ultralytics exports (its box decoding included). Our detectors are timed through the graph
``cspdet export`` writes by default, which ends in the decoded boxes too; NMS is outside every
graph. Latency does not depend on the weights. Our models are timed as deployed: BatchNorm folded and re-parameterised
(:mod:`detector.models.deploy`); ``--no-deploy`` times the BN-folded training graph instead.
The INT8 column is ONNX Runtime on the statically quantized file (:mod:`detector.export.quantize`,
calibrated on random inputs here: speed does not depend on the ranges).

``--profile`` prints ONNX Runtime's own per-op profile (kernel time by op type, the share of
layout reorders and pooling) of every model in the run, e.g.
``python tools/benchmark.py --configs configs/csppelee_efm_sam.yaml --sizes 320 --no-peers
--pairs none --engines onnxruntime --profile``.

CSP vs non-CSP pairs (backbones at 224 as in the paper's tables, detectors at the first size)
compare params, FLOPs, ONNX Runtime latency and peak activation memory.
The markdown goes between ``<!-- benchmark:start -->`` and ``<!-- benchmark:end -->`` in
``--output`` (benchmarks/RESULTS.md), leaving the rest of the file as it is.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple


import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from detector import build_model  # noqa: E402
from detector.models.info import count_params, measure  # noqa: E402

ROOT = Path.cwd()  # outputs go under the folder the command runs in
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
DEFAULT_CONFIGS = ["configs/csppelee_efm_sam.yaml", "configs/pelee_efm_sam.yaml", "configs/csppelee_gfm.yaml"]
PEERS = {"yolov8n": "yolov8n.yaml", "yolo11n": "yolo11n.yaml", "yolo26n": "yolo26n.yaml",
         "yolov3-tiny": "yolov3-tiny.yaml"}
DEFAULT_PAIRS = ["peleenet:csppeleenet", "resnet10:cspresnet10", "resnet50:cspresnet50",
                 "resnext50:cspresnext50", "darknet53:cspdarknet53",
                 "configs/pelee_efm_sam.yaml:configs/csppelee_efm_sam.yaml"]
ENGINES = ("pytorch", "onnxruntime", "opencv")
# The paper's ImageNet figures (docs/paper.md): (params M, BFLOPs) of base -> CSP.
PAPER = {("peleenet", "csppeleenet"): ((2.79, 1.017), (2.83, 0.888)),
         ("resnet10", "cspresnet10"): ((5.24, 2.273), (2.73, 1.905)),
         ("resnet50", "cspresnet50"): ((22.73, 9.74), (21.57, 8.97)),
         ("resnext50", "cspresnext50"): ((22.19, 10.11), (20.50, 7.93)),
         ("darknet53", "cspdarknet53"): ((41.57, 18.57), (27.61, 13.07))}


# --------------------------------------------------------------------------- measurements

class PeakActivationMemory(TorchDispatchMode):
    """Peak bytes of tensors alive at once while ops run (weights and inputs excluded).

    Every op's outputs are counted by storage (views share one) until the last tensor using
    the storage is garbage; run the forward in ``torch.inference_mode()`` so nothing is kept
    for backward. This is what an engine must hold at least, whatever its allocator does.
    """

    def __init__(self):
        super().__init__()
        self._refs: Dict[int, int] = {}
        self._bytes: Dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            self.current -= self._bytes.pop(key)
            del self._refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key not in self._refs:
                    self._refs[key] = 0
                    self._bytes[key] = storage.nbytes()
                    self.current += storage.nbytes()
                    self.peak = max(self.peak, self.current)
                self._refs[key] += 1
                weakref.finalize(t, self._release, key)
        return out


def peak_activation_bytes(model: torch.nn.Module, size: int, batch: int = 1) -> int:
    x = torch.zeros(batch, 3, size, size)
    tracker = PeakActivationMemory()
    with torch.inference_mode(), tracker:
        out = model(x)
    del out
    return tracker.peak


def median_ms(samples: Sequence[float]) -> float:
    return 1000.0 * statistics.median(samples)


# --------------------------------------------------------------------------- models

@dataclass
class Model:
    """A model to time: its deployed PyTorch module (eval, BN folded) and how to export it.

    ``reference`` is the module as trained (params, FLOPs: the deploy rewrite's zero padding
    is not counted)."""
    name: str
    kind: str            # ours | peer | backbone
    module: torch.nn.Module
    export: Callable[[Path, int, int], Path]
    note: str = ""
    reference: Optional[torch.nn.Module] = None
    stats: Dict[int, dict] = field(default_factory=dict)  # size -> params, gflops, memory


def _export_plain(module: torch.nn.Module, path: Path, size: int, batch: int) -> Path:
    """torch.onnx.export of a module's forward (the module is already fused and in eval)."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(batch, 3, size, size),), str(path), dynamo=False,
                          opset_version=17, input_names=["images"], do_constant_folding=True)
    onnx.checker.check_model(str(path))
    return path


def resolve_config(name: str) -> Path:
    """A config path, or a backbone / detector name under configs/."""
    for candidate in (Path(name), ROOT / name, ROOT / "configs" / "backbones" / f"{name}.yaml",
                      ROOT / "configs" / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    try:
        from detector.config import find_config
        return Path(find_config(name))
    except Exception:
        pass
    raise FileNotFoundError(f"no config for '{name}' (tried a path, configs/backbones/ and configs/)")


def build_ours(config: str, deploy: bool = True) -> Model:
    import copy

    from detector.export.onnx_export import export_onnx
    from detector.models.deploy import fold_batchnorm, reparameterize

    path = resolve_config(config)
    reference = build_model(str(path)).eval()
    module = copy.deepcopy(reference)
    is_detector = hasattr(module, "head") and hasattr(module, "decode")
    name = path.stem
    if is_detector:
        module.fuse(deploy=deploy)
    else:
        module = reparameterize(module) if deploy else fold_batchnorm(module)
    if is_detector:
        def export(p, size, batch, m=module):
            return export_onnx(m, p, size, batch=batch, fuse=False)
        return Model(name, "ours", module, export, reference=reference)
    return Model(name, "backbone", module, lambda p, size, batch, m=module: _export_plain(m, p, size, batch),
                 reference=reference)


def build_peer(name: str) -> Model:
    from ultralytics.nn.tasks import DetectionModel

    module = DetectionModel(PEERS[name], verbose=False).eval()
    module.fuse(verbose=False)
    head = module.model[-1]
    head.export, head.format = True, "onnx"  # the graph Ultralytics exports (boxes decoded)
    note = "Ultralytics yaml, random weights, decode in graph"
    return Model(name, "peer", module, lambda p, size, batch, m=module: _export_plain(m, p, size, batch), note)


def int8_files(jobs: List[Tuple[Path, int]]) -> Dict[Path, Path]:
    """Statically quantized twins of fp32 files ``[(path, size)]`` (calibrated on 4 random
    inputs: for timing only), all in one go; returns {fp32: int8} for those written."""
    from detector.export.quantize import quantize_many

    todo, out = [], {}
    for fp32, size in jobs:
        q = fp32.with_name(fp32.stem + "_int8.onnx")
        out[fp32] = q
        if not q.is_file() or q.stat().st_mtime < fp32.stat().st_mtime:
            todo.append((fp32, q, np.random.default_rng(0).random((4, 3, size, size), dtype=np.float32)))
    quantize_many(todo)
    return {k: v for k, v in out.items() if v.is_file()}


# --------------------------------------------------------------------------- engines

def make_runner(engine: str, model: Model, onnx_path: Optional[Path], size: int, batch: int, threads: int):
    """A zero-argument callable running one forward of ``model`` at (batch, 3, size, size)."""
    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    if engine == "pytorch":
        xt = torch.from_numpy(x)
        module = model.module

        def run():
            with torch.inference_mode():
                module(xt)
        return run
    if engine in ("onnxruntime", "int8"):
        from detector.export.onnx_runtime import make_session

        session = make_session(onnx_path, threads=threads, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        session.run(None, feed)
        return lambda: session.run(None, feed)
    if engine == "opencv":
        import cv2

        net = cv2.dnn.readNetFromONNX(str(onnx_path))  # default backend and target: OpenCV's own, CPU
        names = list(net.getUnconnectedOutLayersNames())

        def run():
            net.setInput(x)
            net.forward(names)
        run()  # fail here (reported per model), not inside the timing loop
        return run
    raise ValueError(f"unknown engine {engine}")


def time_blocks(runners: Dict, rounds: int, block: int, warmup: int, desc: str) -> Dict[object, List[float]]:
    """Per round and runner: ``block`` back-to-back calls, the block's median (seconds).

    Runners alternate block by block, so load from other processes hits them all alike,
    while each block runs with the caches its own model left warm.
    """
    from tqdm import tqdm

    for run in runners.values():
        for _ in range(warmup):
            run()
    samples: Dict[object, List[float]] = {k: [] for k in runners}
    for _ in tqdm(range(rounds), desc=desc, unit="round", leave=False):
        for key, run in runners.items():
            times = []
            for _ in range(block):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            samples[key].append(statistics.median(times))
    return samples


def set_threads(threads: int) -> None:
    import cv2

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    from detector.export.onnx_runtime import use_global_thread_pool

    if not use_global_thread_pool(threads):
        print("note: ONNX Runtime's thread pool was set up before; sessions keep their own threads")


# --------------------------------------------------------------------------- ORT profile

REORDER_OPS = ("ReorderInput", "ReorderOutput")
POOL_OPS = ("AveragePool", "MaxPool", "QLinearAveragePool", "NhwcMaxPool", "GlobalAveragePool")


def ort_profile(onnx_path: Path, size: int, threads: int, runs: int = 20) -> Dict[str, dict]:
    """ONNX Runtime's profiler on ``onnx_path``: per op type, kernel time share and nodes per run."""
    import tempfile

    import onnxruntime as ort

    from detector.export.onnx_runtime import session_options

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
    total, nodes = {}, {}
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            total[op] = total.get(op, 0) + e["dur"]
            nodes[op] = nodes.get(op, 0) + 1
    t = sum(total.values()) or 1
    return {op: {"share": d / t, "nodes": nodes[op] // runs, "ms": d / runs / 1000}
            for op, d in sorted(total.items(), key=lambda kv: -kv[1])}


def profile_markdown(name: str, size: int, prof: Dict[str, dict], label: str = "fp32") -> List[str]:
    reorder = sum(v["share"] for k, v in prof.items() if k in REORDER_OPS)
    pool = sum(v["share"] for k, v in prof.items() if k in POOL_OPS)
    lines = [f"**{name} @ {size} ({label})**: reorders {100 * reorder:.1f}%, pooling {100 * pool:.1f}%, "
             f"reorder + pooling {100 * (reorder + pool):.1f}% of ORT kernel time", "",
             "| op | kernel time | nodes per run |", "|---|---|---|"]
    for op, v in prof.items():
        if v["share"] >= 0.001 or op in REORDER_OPS:
            lines.append(f"| {op} | {100 * v['share']:.1f}% | {v['nodes']} |")
    return lines + [""]


# --------------------------------------------------------------------------- the run

def benchmark(models: List[Model], sizes_of: Dict[str, List[int]], engines: Sequence[str], threads: int,
              iters: int, warmup: int, tp_batch: int, cache: Path, block: int = 10, int8: bool = True
              ) -> Tuple[Dict[Tuple[str, int, str, int], dict], Dict[Tuple[str, int, str, int], List[float]],
                         Dict[Tuple[str, int, int], Path]]:
    """Latency (batch 1) and throughput (batch ``tp_batch``) per (model, size, engine).

    Returns the summary per key, the per-round samples (seconds) and the ONNX files.
    """
    results: Dict[Tuple[str, int, str, int], dict] = {}
    rounds_of: Dict[Tuple[str, int, str, int], List[float]] = {}
    from tqdm import tqdm

    # stats and ONNX files first (quiet machine work, not timed)
    jobs = [(m, s) for m in models for s in sizes_of[m.name]]
    files: Dict[Tuple[str, int, int], Path] = {}
    int8 = int8 and "onnxruntime" in engines  # the INT8 column runs in ONNX Runtime
    for m, s in tqdm(jobs, desc="export + FLOPs", unit="model", leave=False):
        ref = m.reference if m.reference is not None else m.module
        flops, _, _ = measure(ref, s)
        m.stats[s] = {"params": count_params(ref), "gflops": flops / 1e9,
                      "peak_mb": peak_activation_bytes(m.module, s) / 2 ** 20}
        if any(e != "pytorch" for e in engines):
            for batch in sorted({1, tp_batch} - {0}):
                path = cache / f"{m.name}_{s}_b{batch}.onnx"
                m.export(path, s, batch)
                files[(m.name, s, batch)] = path
    if int8:
        quantized = int8_files([(files[(m.name, s, 1)], s) for m, s in jobs])
        for m, s in jobs:
            q = quantized.get(files[(m.name, s, 1)])
            if q is None:
                results[(m.name, s, "int8", 1)] = {"error": "quantization failed"}
            else:
                files[(m.name, s, -1)] = q
    for pass_engines, batch in timing_passes(engines, tp_batch, int8):
        runners = {}
        for engine in pass_engines:
            for m, s in jobs:
                key = (m.name, s, engine, batch)
                if key in results:
                    continue
                path = files.get((m.name, s, -1 if engine == "int8" else batch))
                try:
                    runners[key] = make_runner(engine, m, path, s, batch, threads)
                except Exception as e:  # an engine that cannot run a graph: say so in the table
                    results[key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
        if runners:
            n = iters if batch == 1 else max(2, iters // 4)
            samples = time_blocks(runners, n, block if batch == 1 else max(1, block // 4),
                                  warmup if batch == 1 else 1, f"{'+'.join(pass_engines)} batch {batch}")
            for key, times in samples.items():
                ms = median_ms(times)
                results[key] = {"ms": ms, "min_ms": 1000 * min(times), "max_ms": 1000 * max(times),
                                "img_s": batch * 1000.0 / ms, "rounds": len(times)}
                rounds_of[key] = times
            del runners
    return results, rounds_of, files


def timing_passes(engines: Sequence[str], tp_batch: int, int8: bool) -> List[Tuple[List[str], int]]:
    """(engines, batch) timed together, pass after pass. Engines run in separate passes (an idle
    thread pool of one slows the other down), except ONNX Runtime fp32 and INT8 at batch 1:
    they share one thread pool, and timing them in the same rounds makes INT8-vs-fp32 ratios
    (INT8 flagship / YOLO11n fp32) as robust to the machine's drift as the fp32 ones."""
    passes = []
    for engine in engines:
        for batch in sorted({1, tp_batch} - {0}):
            both = engine == "onnxruntime" and batch == 1 and int8
            passes.append((["onnxruntime", "int8"] if both else [engine], batch))
    return passes


def ratio(rounds_of, a, b) -> Optional[Tuple[float, float, float]]:
    """Median, min and max over rounds of time(a) / time(b) (same rounds, same run)."""
    ra, rb = rounds_of.get(a), rounds_of.get(b)
    if not ra or not rb:
        return None
    rs = [x / y for x, y in zip(ra, rb)]
    return statistics.median(rs), min(rs), max(rs)


def fmt(v, spec=".1f", missing="-") -> str:
    return missing if v is None else format(v, spec)


def fmt_ms(r: dict) -> str:
    if not r or "ms" not in r:
        return "-"
    return f"{r['ms']:.2f} ({r['min_ms']:.2f}-{r['max_ms']:.2f})"


def fmt_ratio(r, digits: int = 2) -> str:
    """``median x (min-max)``; more digits where the compared models differ by about 1%."""
    return "-" if r is None else f"{r[0]:.{digits}f}x ({r[1]:.{digits}f}-{r[2]:.{digits}f})"


def machine_line(threads: int) -> str:
    from detector.common import cpu_name

    cpu = cpu_name()
    import cv2
    import onnxruntime

    try:
        import ultralytics
        ul = f", ultralytics {ultralytics.__version__}"
    except ImportError:
        ul = ""
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {threads} thread{'s' if threads != 1 else ''} per engine; torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}, OpenCV {cv2.__version__}{ul}")


def load_line() -> str:
    try:
        return "load average " + " / ".join(f"{v:.2f}" for v in os.getloadavg()) + " (1 / 5 / 15 min)"
    except OSError:
        return "load average unknown"


FLAGSHIP = "csppelee_efm_sam"


def targets(models: Dict[str, Model], results, rounds_of, pairs, profiles, size: int) -> List[str]:
    """The speed targets of the project (issue 10), checked on this run's numbers."""
    out = []

    def check(label, r, limit, below=True):
        if r is None:
            return
        ok = r[0] <= limit if below else r[0] >= limit
        out.append(f"| {label} | {fmt_ratio(r)} | {'<=' if below else '>='} {limit} | {'yes' if ok else 'NO'} |")

    key = lambda name, s, e="onnxruntime": (name, s, e, 1)  # noqa: E731
    for base, csp, s in pairs:
        limit = {("peleenet", "csppeleenet"): 0.92, ("pelee_efm_sam", FLAGSHIP): 0.93}.get((base.name, csp.name), 1.0)
        check(f"{csp.name} / {base.name} @ {s}, ORT fp32", ratio(rounds_of, key(csp.name, s), key(base.name, s)),
              limit if limit < 1 else 0.999)
    if FLAGSHIP in models:
        for peer, limit in (("yolov3-tiny", 0.70), ("yolo11n", 1.25)):
            if peer in models:
                check(f"{FLAGSHIP} / {peer} @ {size}, ORT fp32",
                      ratio(rounds_of, key(FLAGSHIP, size), key(peer, size)), limit)
        if "yolo11n" in models:
            check(f"{FLAGSHIP} INT8 / yolo11n fp32 @ {size}, ORT",
                  ratio(rounds_of, key(FLAGSHIP, size, "int8"), key("yolo11n", size)), 0.80)
    prof = profiles.get((FLAGSHIP, size, "fp32"))
    if prof:
        share = sum(v["share"] for k, v in prof.items() if k in REORDER_OPS + POOL_OPS)
        out.append(f"| {FLAGSHIP} reorder + pooling share of ORT kernel time | {100 * share:.1f}% | <= 6% | "
                   f"{'yes' if share <= 0.06 else 'NO'} |")
    if not out:
        return []
    return ["", "### Targets (this run)", "", "| check | measured (median, min-max over rounds) | target | met |",
            "|---|---|---|---|"] + out


def markdown(models: List[Model], sizes_of, engines, results, rounds_of, pairs, profiles, args, command: str) -> str:
    int8 = args.int8 and "onnxruntime" in engines
    lines = [START, "", "## Speed: our detectors and peers (tools/benchmark.py)", "",
             f"- Machine: {machine_line(args.threads)}.",
             f"- Load: {args.load_before} before the run, {load_line()} after it.",
             f"- Latency: batch 1, ms, median over {args.iters} rounds (min-max of the rounds in brackets); each "
             f"round runs every model in turn for a block of {args.block} back-to-back runs (median of the "
             f"block), after {args.warmup} warm-up runs. ONNX Runtime sessions share one thread pool. "
             "Random weights (speed does not depend on them), float32"
             + (", INT8 = static QDQ quantization (per-channel int8 weights, uint8 activations)" if int8 else "") + ".",
             f"- Ours: {'deployed graph (BatchNorm folded, re-parameterised: detector/models/deploy.py)' if args.deploy else 'BN-folded training graph (--no-deploy)'}. "
             "GFLOPs: torch.utils.flop_counter (multiply-add = 2), batch 1, of the trained network. Peak act.: largest "
             "total of activation tensors alive at once in a PyTorch forward (weights excluded).",
             f"- Date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}. Command: `{command}`",
             ]
    if args.throughput_batch:
        lines.append(f"- Throughput: batch {args.throughput_batch}, images/s.")
    if args.shared_note:
        lines.append(f"- Note: {args.shared_note}")
    lines.append("")
    eng_names = {"pytorch": "PyTorch", "onnxruntime": "ORT", "opencv": "OpenCV", "int8": "ORT INT8"}
    shown = list(engines) + (["int8"] if int8 else [])
    head = ["model", "size", "params (M)", "GFLOPs", "peak act. (MB)"]
    head += [f"{eng_names[e]} ms" for e in shown]
    if args.throughput_batch:
        head += [f"{eng_names[e]} img/s" for e in engines]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    errors = []
    for m in models:
        if m.kind == "backbone":
            continue
        for s in sizes_of[m.name]:
            st = m.stats[s]
            label = m.name + (" (peer)" if m.kind == "peer" else "")
            row = [label, str(s), f"{st['params'] / 1e6:.2f}", f"{st['gflops']:.2f}", f"{st['peak_mb']:.1f}"]
            for e in shown:
                r = results.get((m.name, s, e, 1), {})
                if "error" in r:
                    errors.append(f"{m.name} {s} {e}: {r['error']}")
                    row.append("n/a")
                else:
                    row.append(fmt_ms(r))
            if args.throughput_batch:
                for e in engines:
                    r = results.get((m.name, s, e, args.throughput_batch), {})
                    if "error" in r:
                        errors.append(f"{m.name} {s} {e} batch {args.throughput_batch}: {r['error']}")
                        row.append("n/a")
                    else:
                        row.append(fmt(r.get("img_s")))
            lines.append("| " + " | ".join(row) + " |")
    peers = [m for m in models if m.kind == "peer"]
    if peers:
        lines += ["", "Peers: " + "; ".join(f"{m.name} from `{PEERS[m.name]}`" for m in peers)
                  + " (Ultralytics, random weights, their export graph with box decoding; ours: the default "
                    "export graph, also ending in decoded boxes; NMS is outside every graph)."]
        ours = [m for m in models if m.kind == "ours"]
        if ours and "onnxruntime" in engines:
            s0 = sizes_of[ours[0].name][0]
            lines += ["", f"Ratios at {s0} (ORT fp32, per round, same run): " + "; ".join(
                f"{o.name} / {p.name} {fmt_ratio(ratio(rounds_of, (o.name, s0, 'onnxruntime', 1), (p.name, s0, 'onnxruntime', 1)))}"
                for o in ours[:1] for p in peers if s0 in sizes_of[p.name]) + "."]
    if pairs:
        lines += ["", "### CSP vs non-CSP (the paper's claims, on our implementations)", "",
                  "| pair | size | params (M) | GFLOPs | ORT ms | ORT CSP / base (per round) | "
                  + ("ORT INT8 ms | " if int8 else "") + "PyTorch ms | peak act. (MB) | paper: params, FLOPs |",
                  "|---|---|---|---|---|---|" + ("---|" if int8 else "") + "---|---|---|"]
        for base, csp, size in pairs:
            cells = []
            getters = [("params", lambda m: m.stats[size]["params"] / 1e6, ".2f"),
                       ("gflops", lambda m: m.stats[size]["gflops"], ".3f"),
                       ("ort", lambda m: results.get((m.name, size, "onnxruntime", 1), {}).get("ms"), ".2f"),
                       ("ratio", None, None)]
            if int8:
                getters.append(("int8", lambda m: results.get((m.name, size, "int8", 1), {}).get("ms"), ".2f"))
            getters += [("pt", lambda m: results.get((m.name, size, "pytorch", 1), {}).get("ms"), ".1f"),
                        ("mem", lambda m: m.stats[size]["peak_mb"], ".1f")]
            for key, getter, spec in getters:
                if key == "ratio":
                    cells.append(fmt_ratio(ratio(rounds_of, (csp.name, size, "onnxruntime", 1),
                                                 (base.name, size, "onnxruntime", 1))))
                    continue
                a, b = getter(base), getter(csp)
                if a is None or b is None:
                    cells.append("-")
                else:
                    cells.append(f"{format(a, spec)} -> {format(b, spec)} ({100 * (b - a) / a:+.0f}%)")
            paper = PAPER.get((base.name, csp.name))
            if paper:
                (pa, fa), (pb, fb) = paper
                cells.append(f"{100 * (pb - pa) / pa:+.0f}%, {100 * (fb - fa) / fa:+.0f}%")
            else:
                cells.append("-")
            lines.append(f"| {base.name} -> {csp.name} | {size} | " + " | ".join(cells) + " |")
        lines += ["", "Backbones are ImageNet classifiers (1000-class head) as in the paper's tables; the "
                      "paper column is the change the authors report (docs/paper.md)."]
    lines += targets({m.name: m for m in models}, results, rounds_of, pairs, profiles,
                     args.sizes[0])
    if profiles:
        lines += ["", "### ONNX Runtime per-op profile (--profile)", ""]
        for (name, size, label), prof in profiles.items():
            lines += profile_markdown(name, size, prof, label)
    if errors:
        lines += ["", "Not run: " + "; ".join(errors)]
    lines += ["", END]
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Put ``section`` between the markers of ``path``, leaving everything else as it is."""
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmark results\n\n"
    if START in text and END in text and text.index(START) < text.index(END):
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS, help="our detector configs")
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 416, 512], help="input sizes")
    ap.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    ap.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS),
                    help="Ultralytics peers (skipped when ultralytics is not installed)")
    ap.add_argument("--no-peers", action="store_true", help="no peers")
    ap.add_argument("--pairs", nargs="*", default=DEFAULT_PAIRS,
                    help="CSP pairs 'base:csp' (backbone names or config paths); 'none' for no pairs")
    ap.add_argument("--backbone-size", type=int, default=224, help="input size of backbone pairs")
    ap.add_argument("--threads", type=int, default=2, help="threads per engine")
    ap.add_argument("--iters", type=int, default=40, help="timed rounds at batch 1")
    ap.add_argument("--block", type=int, default=3,
                    help="back-to-back runs of one model per round (short rounds keep a pair's blocks "
                         "close in time: stable ratios on a shared machine)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed runs per model first")
    ap.add_argument("--throughput-batch", type=int, default=8, help="batch for throughput (0 = skip)")
    ap.add_argument("--no-int8", dest="int8", action="store_false", help="no ORT INT8 column")
    ap.add_argument("--no-deploy", dest="deploy", action="store_false",
                    help="time our models as BN-folded training graphs (no deploy re-parameterisation)")
    ap.add_argument("--profile", action="store_true",
                    help="print ONNX Runtime's per-op profile (reorder / pooling share) of every model")
    ap.add_argument("--quick", action="store_true", help="5 rounds of 3 runs, 2 warm-up runs")
    ap.add_argument("--output", default=str(ROOT / "benchmarks" / "RESULTS.md"), help="markdown file to update")
    ap.add_argument("--json", default=str(ROOT / "runs" / "benchmark" / "results.json"), help="raw results")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "benchmark" / "onnx"), help="exported models")
    ap.add_argument("--shared-note", default="", help="a note for the table (e.g. other load on the machine)")
    args = ap.parse_args(argv)
    if args.quick:
        args.iters, args.warmup, args.block = 5, 2, 3
    if args.pairs == ["none"]:
        args.pairs = []
    if args.no_peers:
        args.peers = []
    if args.iters < 1 or args.block < 1:
        ap.error("--iters and --block must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.load_before = load_line()
    shown = list(argv if argv is not None else sys.argv[1:])
    for i, a in enumerate(shown[:-1]):
        if a == "--shared-note":
            shown[i + 1] = "<the note below>"
    command = shlex.join(["python", "tools/benchmark.py", *shown])
    set_threads(args.threads)
    models: Dict[str, Model] = {}
    sizes_of: Dict[str, List[int]] = {}

    def add(model: Model, sizes: Sequence[int]) -> Model:
        if model.name in models:
            model = models[model.name]
        models[model.name] = model
        sizes_of[model.name] = sorted(set(sizes_of.get(model.name, [])) | set(sizes))
        return model

    for cfg in args.configs:
        try:
            add(build_ours(cfg, args.deploy), args.sizes)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.peers:
        try:
            import ultralytics  # noqa: F401
        except ImportError:
            print("ultralytics is not installed: peers skipped (pip install ultralytics)")
            args.peers = []
    for name in args.peers:
        add(build_peer(name), args.sizes)
    pairs = []
    for item in args.pairs:
        if ":" not in item:
            print(f"error: --pairs takes base:csp items, got '{item}'", file=sys.stderr)
            return 2
        base_name, csp_name = item.split(":", 1)
        try:
            base, csp = build_ours(base_name, args.deploy), build_ours(csp_name, args.deploy)
        except FileNotFoundError as e:
            print(f"pair {item} skipped: {e}")
            continue
        size = args.backbone_size if base.kind == "backbone" else args.sizes[0]
        base, csp = add(base, [size]), add(csp, [size])
        pairs.append((base, csp, size))

    cache = Path(args.cache)
    results, rounds_of, files = benchmark(list(models.values()), sizes_of, args.engines, args.threads,
                                          args.iters, args.warmup, args.throughput_batch, cache,
                                          args.block, args.int8)
    profiles = {}
    if args.profile:
        for m in models.values():
            for s in sizes_of[m.name]:
                for label, key in (("fp32", (m.name, s, 1)), ("INT8", (m.name, s, -1))):
                    if key in files:
                        profiles[(m.name, s, label)] = ort_profile(files[key], s, args.threads)
    section = markdown(list(models.values()), sizes_of, args.engines, results, rounds_of, pairs, profiles,
                       args, command)
    write_section(Path(args.output), section)
    print(section)
    raw = {"args": vars(args), "results": [{"model": k[0], "size": k[1], "engine": k[2], "batch": k[3], **v}
                                           for k, v in results.items()],
           "rounds_ms": [{"model": k[0], "size": k[1], "engine": k[2], "batch": k[3],
                          "ms": [1000 * t for t in v]} for k, v in rounds_of.items()],
           "profiles": [{"model": k[0], "size": k[1], "kind": k[2], "ops": v} for k, v in profiles.items()],
           "stats": {m.name: m.stats for m in models.values()}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")
    print(f"written: {args.output} (between the benchmark markers), {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
