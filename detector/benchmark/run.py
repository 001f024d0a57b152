"""The speed run: stats and exports first (untimed), then the engines pass after pass, the
models of a pass alternating in blocks (:func:`~detector.benchmark.timing.time_blocks`)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from .int8 import int8_files, openvino_int8_files
from .memory import peak_activation_bytes
from .models import Model
from .runner import INT8_ENGINE, make_runner
from .timing import median_ms, time_blocks

Key = Tuple[str, int, str, int]          # (model, size, engine, batch)
FileKey = Tuple[str, int, int]           # (model, size, batch); batch -1 / -2 = the ORT / OpenVINO INT8 file
INT8_BATCH = {"int8": -1, "openvino-int8": -2}  # the file key of each INT8 column (batch 1)


def benchmark(models: List[Model], sizes_of: Dict[str, List[int]], engines: Sequence[str], threads: int,
              iters: int, warmup: int, tp_batch: int, cache: Path, block: int = 10, int8: bool = True
              ) -> Tuple[Dict[Key, dict], Dict[Key, List[float]], Dict[FileKey, Path]]:
    """Latency (batch 1) and throughput (batch ``tp_batch``) per (model, size, engine).

    Returns the summary per key (``ms``, ``min_ms``, ``max_ms``, ``img_s``, ``rounds``, or
    ``error``), the per-round samples (seconds) and the ONNX files.
    """
    jobs = [(m, s) for m in models for s in sizes_of[m.name]]
    int8_engines = [INT8_ENGINE[e] for e in engines if e in INT8_ENGINE] if int8 else []
    files = measure_and_export(jobs, engines, tp_batch, cache)
    results: Dict[Key, dict] = {}
    for engine in int8_engines:
        results.update(add_int8_files(jobs, files, engine))
    rounds_of: Dict[Key, List[float]] = {}
    for pass_engines, batch in timing_passes(engines, tp_batch, int8_engines):
        runners = {}
        for engine in pass_engines:
            for m, s in jobs:
                key = (m.name, s, engine, batch)
                if key in results:
                    continue
                path = files.get((m.name, s, INT8_BATCH.get(engine, batch)))
                try:
                    runners[key] = make_runner(engine, m, path, s, batch, threads)
                except Exception as e:  # an engine that cannot run a graph: say so in the table
                    results[key] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}
        if runners:
            n = iters if batch == 1 else max(2, iters // 4)
            samples = time_blocks(runners, n, block if batch == 1 else max(1, block // 4),
                                  warmup if batch == 1 else 1, f"{'+'.join(pass_engines)} batch {batch}")
            for key, times in samples.items():
                results[key] = summary(times, batch)
                rounds_of[key] = times
            del runners
    return results, rounds_of, files


def measure_and_export(jobs: List[Tuple[Model, int]], engines: Sequence[str], tp_batch: int,
                       cache: Path) -> Dict[FileKey, Path]:
    """Params, GFLOPs and peak activation memory into each model's ``stats``; the ONNX files
    the engines other than PyTorch need (quiet machine work, not timed)."""
    from tqdm import tqdm

    from ..models.info import count_params, measure

    files: Dict[FileKey, Path] = {}
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
    return files


def add_int8_files(jobs: List[Tuple[Model, int]], files: Dict[FileKey, Path], engine: str = "int8"
                   ) -> Dict[Key, dict]:
    """The INT8 twins for ``engine`` (``int8``: ORT QDQ; ``openvino-int8``: NNCF IR) of the
    batch-1 files, added to ``files`` under :data:`INT8_BATCH`; returns the error results of
    those that could not be quantized."""
    errors = {}
    make = int8_files if engine == "int8" else openvino_int8_files
    quantized = make([(files[(m.name, s, 1)], s) for m, s in jobs])
    for m, s in jobs:
        q = quantized.get(files[(m.name, s, 1)])
        if q is None:
            errors[(m.name, s, engine, 1)] = {"error": "quantization failed"}
        else:
            files[(m.name, s, INT8_BATCH[engine])] = q
    return errors


def summary(times: List[float], batch: int) -> dict:
    """One cell: the median over rounds, its spread and the throughput it gives."""
    ms = median_ms(times)
    return {"ms": ms, "min_ms": 1000 * min(times), "max_ms": 1000 * max(times),
            "img_s": batch * 1000.0 / ms, "rounds": len(times)}


def timing_passes(engines: Sequence[str], tp_batch: int, int8_engines: Sequence[str] = ()
                  ) -> List[Tuple[List[str], int]]:
    """(engines, batch) timed together, pass after pass. Engines run in separate passes (an idle
    thread pool of one slows the other down), except an engine's fp32 and INT8 at batch 1 (ONNX
    Runtime's share one thread pool, OpenVINO's one CPU plugin): timing them in the same rounds
    makes INT8-vs-fp32 ratios as robust to the machine's drift as the fp32 ones."""
    passes = []
    for engine in engines:
        for batch in sorted({1, tp_batch} - {0}):
            q = INT8_ENGINE.get(engine)
            both = batch == 1 and q in int8_engines
            passes.append(([engine, q] if both else [engine], batch))
    return passes


def profile_files(models: List[Model], sizes_of: Dict[str, List[int]], files: Dict[FileKey, Path],
                  threads: int, engines: Sequence[str] = ("onnxruntime",)
                  ) -> Dict[Tuple[str, int, str], Dict[str, dict]]:
    """Each engine's own per-op profile of every batch-1 file of the run, fp32 and INT8: ONNX
    Runtime's (labels ``fp32`` / ``INT8``) and, when OpenVINO is in ``engines``, OpenVINO's
    ``PERF_COUNT`` (labels ``OpenVINO fp32`` / ``OpenVINO INT8``)."""
    from .ort_profile import ort_profile

    jobs = []
    if "onnxruntime" in engines:
        jobs += [("fp32", 1, ort_profile), ("INT8", INT8_BATCH["int8"], ort_profile)]
    if "openvino" in engines:
        from .openvino_profile import openvino_profile

        jobs += [("OpenVINO fp32", 1, openvino_profile),
                 ("OpenVINO INT8", INT8_BATCH["openvino-int8"], openvino_profile)]
    profiles = {}
    for m in models:
        for s in sizes_of[m.name]:
            for label, batch, profiler in jobs:
                key = (m.name, s, batch)
                if key in files:
                    profiles[(m.name, s, label)] = profiler(files[key], s, threads)
    return profiles
