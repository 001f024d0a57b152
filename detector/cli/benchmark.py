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
thread pool. Peers (Ultralytics YOLOv8n, YOLO11n, YOLOv3-tiny) are built from Ultralytics'
yaml files with random weights -- nothing is downloaded -- and timed through the graph
Ultralytics exports (its box decoding included). Latency does not depend on the weights.

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
import platform
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
PEERS = {"yolov8n": "yolov8n.yaml", "yolo11n": "yolo11n.yaml", "yolov3-tiny": "yolov3-tiny.yaml"}
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
    """A model to time: its PyTorch module (eval, BN folded) and how to export it."""
    name: str
    kind: str            # ours | peer | backbone
    module: torch.nn.Module
    export: Callable[[Path, int, int], Path]
    note: str = ""
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
    raise FileNotFoundError(f"no config for '{name}' (tried a path, configs/backbones/ and configs/)")


def build_ours(config: str) -> Model:
    from detector.export.onnx_export import export_onnx

    path = resolve_config(config)
    module = build_model(str(path)).eval()
    is_detector = hasattr(module, "head") and hasattr(module, "decode")
    name = path.stem
    if hasattr(module, "fuse"):
        module.fuse()
    if is_detector:
        def export(p, size, batch, m=module):
            return export_onnx(m, p, size, batch=batch, fuse=False)
        return Model(name, "ours", module, export)
    return Model(name, "backbone", module, lambda p, size, batch, m=module: _export_plain(m, p, size, batch))


def build_peer(name: str) -> Model:
    from ultralytics.nn.tasks import DetectionModel

    module = DetectionModel(PEERS[name], verbose=False).eval()
    module.fuse(verbose=False)
    head = module.model[-1]
    head.export, head.format = True, "onnx"  # the graph Ultralytics exports (boxes decoded)
    note = "Ultralytics yaml, random weights, decode in graph"
    return Model(name, "peer", module, lambda p, size, batch, m=module: _export_plain(m, p, size, batch), note)


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
    if engine == "onnxruntime":
        from detector.export.onnx_runtime import make_session

        session = make_session(onnx_path, threads=threads, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
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


def time_alternating(runners: Dict[str, Callable], iters: int, warmup: int, desc: str) -> Dict[str, List[float]]:
    """Warm each runner up, then time one call of each per round (seconds)."""
    from tqdm import tqdm

    for run in runners.values():
        for _ in range(warmup):
            run()
    samples: Dict[str, List[float]] = {k: [] for k in runners}
    for _ in tqdm(range(iters), desc=desc, unit="round", leave=False):
        for key, run in runners.items():
            t0 = time.perf_counter()
            run()
            samples[key].append(time.perf_counter() - t0)
    return samples


def set_threads(threads: int) -> None:
    import cv2

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    from detector.export.onnx_runtime import use_global_thread_pool

    if not use_global_thread_pool(threads):
        print("note: ONNX Runtime's thread pool was set up before; sessions keep their own threads")


# --------------------------------------------------------------------------- the run

def benchmark(models: List[Model], sizes_of: Dict[str, List[int]], engines: Sequence[str], threads: int,
              iters: int, warmup: int, tp_batch: int, cache: Path) -> Dict[Tuple[str, int, str, int], dict]:
    """Latency (batch 1) and throughput (batch ``tp_batch``) per (model, size, engine)."""
    results: Dict[Tuple[str, int, str, int], dict] = {}
    from tqdm import tqdm

    # stats and ONNX files first (quiet machine work, not timed)
    jobs = [(m, s) for m in models for s in sizes_of[m.name]]
    files: Dict[Tuple[str, int, int], Path] = {}
    for m, s in tqdm(jobs, desc="export + FLOPs", unit="model", leave=False):
        flops, _, _ = measure(m.module, s)
        m.stats[s] = {"params": count_params(m.module), "gflops": flops / 1e9,
                      "peak_mb": peak_activation_bytes(m.module, s) / 2 ** 20}
        if any(e != "pytorch" for e in engines):
            for batch in sorted({1, tp_batch} - {0}):
                path = cache / f"{m.name}_{s}_b{batch}.onnx"
                if not path.is_file():
                    m.export(path, s, batch)
                files[(m.name, s, batch)] = path
    for engine in engines:
        for batch in sorted({1, tp_batch} - {0}):
            runners = {}
            for m, s in jobs:
                key = (m.name, s, engine, batch)
                try:
                    runners[key] = make_runner(engine, m, files.get((m.name, s, batch)), s, batch, threads)
                except Exception as e:  # an engine that cannot run a graph: say so in the table
                    results[key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
            n = iters if batch == 1 else max(2, iters // 4)
            samples = time_alternating(runners, n, warmup if batch == 1 else 1, f"{engine} batch {batch}")
            for key, times in samples.items():
                ms = median_ms(times)
                results[key] = {"ms": ms, "img_s": batch * 1000.0 / ms, "iters": len(times)}
            del runners
    return results


def fmt(v, spec=".1f", missing="-") -> str:
    return missing if v is None else format(v, spec)


def machine_line(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import cv2
    import onnxruntime

    return (f"{cpu}, {os.cpu_count()} logical CPUs, {threads} thread{'s' if threads != 1 else ''} per engine; torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}, OpenCV {cv2.__version__}")


def markdown(models: List[Model], sizes_of, engines, results, pairs, args, command: str) -> str:
    lines = [START, "", "## Speed: our detectors and peers (tools/benchmark.py)", "",
             f"- Machine: {machine_line(args.threads)}.",
             f"- Latency: batch 1, median of {args.iters} alternating rounds after {args.warmup} warm-up runs; "
             f"throughput: batch {args.throughput_batch}, images/s. Random weights (speed does not depend on them), "
             "BatchNorm folded, float32.",
             "- GFLOPs: torch.utils.flop_counter (multiply-add = 2), batch 1. Peak act.: largest total of "
             "activation tensors alive at once in a PyTorch forward (weights excluded).",
             f"- Date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}. Command: `{command}`",
             ]
    if args.shared_note:
        lines.append(f"- Note: {args.shared_note}")
    lines.append("")
    eng_names = {"pytorch": "PyTorch", "onnxruntime": "ORT", "opencv": "OpenCV"}
    head = ["model", "size", "params (M)", "GFLOPs", "peak act. (MB)"]
    head += [f"{eng_names[e]} ms" for e in engines]
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
            for batch in ([1, args.throughput_batch] if args.throughput_batch else [1]):
                for e in engines:
                    r = results.get((m.name, s, e, batch), {})
                    if "error" in r:
                        errors.append(f"{m.name} {s} {e}: {r['error']}")
                        row.append("n/a")
                    else:
                        row.append(fmt(r.get("ms") if batch == 1 else r.get("img_s")))
            lines.append("| " + " | ".join(row) + " |")
    peers = [m for m in models if m.kind == "peer"]
    if peers:
        lines += ["", "Peers: " + "; ".join(f"{m.name} from `{PEERS[m.name]}`" for m in peers)
                  + " (Ultralytics, random weights, their export graph with box decoding; ours end at the "
                    "raw head outputs, decoding and NMS are outside all graphs except Ultralytics' decode)."]
    if pairs:
        lines += ["", "### CSP vs non-CSP (the paper's claims, on our implementations)", "",
                  "| pair | size | params (M) | GFLOPs | ORT ms | PyTorch ms | peak act. (MB) | paper: params, FLOPs |",
                  "|---|---|---|---|---|---|---|---|"]
        for base, csp, size in pairs:
            cells = []
            for key, getter, spec in (("params", lambda m: m.stats[size]["params"] / 1e6, ".2f"),
                                      ("gflops", lambda m: m.stats[size]["gflops"], ".3f"),
                                      ("ort", lambda m: results.get((m.name, size, "onnxruntime", 1), {}).get("ms"), ".1f"),
                                      ("pt", lambda m: results.get((m.name, size, "pytorch", 1), {}).get("ms"), ".1f"),
                                      ("mem", lambda m: m.stats[size]["peak_mb"], ".1f")):
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
    ap.add_argument("--iters", type=int, default=30, help="timed rounds at batch 1")
    ap.add_argument("--warmup", type=int, default=5, help="untimed runs per model first")
    ap.add_argument("--throughput-batch", type=int, default=8, help="batch for throughput (0 = skip)")
    ap.add_argument("--quick", action="store_true", help="5 rounds, 2 warm-up runs")
    ap.add_argument("--output", default=str(ROOT / "benchmarks" / "RESULTS.md"), help="markdown file to update")
    ap.add_argument("--json", default=str(ROOT / "runs" / "benchmark" / "results.json"), help="raw results")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "benchmark" / "onnx"), help="exported models")
    ap.add_argument("--shared-note", default="", help="a note for the table (e.g. other load on the machine)")
    args = ap.parse_args(argv)
    if args.quick:
        args.iters, args.warmup = 5, 2
    if args.pairs == ["none"]:
        args.pairs = []
    if args.no_peers:
        args.peers = []
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
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
        add(build_ours(cfg), args.sizes)
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
            raise SystemExit(f"--pairs takes base:csp items, got '{item}'")
        base_name, csp_name = item.split(":", 1)
        try:
            base, csp = build_ours(base_name), build_ours(csp_name)
        except FileNotFoundError as e:
            print(f"pair {item} skipped: {e}")
            continue
        size = args.backbone_size if base.kind == "backbone" else args.sizes[0]
        base, csp = add(base, [size]), add(csp, [size])
        pairs.append((base, csp, size))

    cache = Path(args.cache)
    results = benchmark(list(models.values()), sizes_of, args.engines, args.threads, args.iters,
                        args.warmup, args.throughput_batch, cache)
    section = markdown(list(models.values()), sizes_of, args.engines, results, pairs, args, command)
    write_section(Path(args.output), section)
    print(section)
    raw = {"args": vars(args), "results": [{"model": k[0], "size": k[1], "engine": k[2], "batch": k[3], **v}
                                           for k, v in results.items()],
           "stats": {m.name: m.stats for m in models.values()}}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")
    print(f"written: {args.output} (between the benchmark markers), {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
