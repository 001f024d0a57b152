"""Running an ablation: every variant trained at every seed through the project's Trainer,
measured once (params, GFLOPs, memory, the feature pyramid's own memory), then timed in ONNX
Runtime together. A variant that cannot be built or trained is a row saying why; the others go on."""
from __future__ import annotations

import copy
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .sets import AblationSet, Variant, run_config

METRICS = ("AP", "AP50", "AP75")
log = logging.getLogger("cspdet.ablate")


@dataclass
class AblationRun:
    """What a table is made of: one row per variant (``name``, ``stats``, ``metrics`` per seed,
    ``times``, ``errors``, ``ort_ms``; ``error`` instead of ``stats`` for a failed one)."""
    rows: List[dict] = field(default_factory=list)
    size: Optional[int] = None
    data_note: str = ""

    @property
    def any_finished(self) -> bool:
        return any("stats" in r for r in self.rows)


def run_ablation(sets: dict, aset: AblationSet, variants: Sequence[Variant], budget: dict, seeds: Sequence[int],
                 overrides: Sequence[str], save_dir: Path, threads: int, ort_iters: int,
                 progress: bool = True) -> AblationRun:
    """Train and measure ``variants`` of ``aset``; run folders go in ``save_dir``."""
    run = AblationRun()
    for variant in variants:
        row = {"name": variant.name, "metrics": [], "times": [], "errors": []}
        run.rows.append(row)
        cfgs = _build_variant(run, row, sets, variant, budget, seeds, overrides, save_dir)
        if cfgs is None:
            continue
        _train_variant(run, row, aset, seeds, cfgs, progress)
        if not row["metrics"]:
            row.pop("stats")
            row["error"] = row["errors"][0] if row["errors"] else "no run finished"
    built = {r["name"]: r["stats"].pop("model") for r in run.rows if "stats" in r}
    if built:
        try:
            for name, ms in ort_latency(built, run.size, save_dir, ort_iters, threads).items():
                next(r for r in run.rows if r["name"] == name)["ort_ms"] = ms
        except Exception as e:  # latency is one column; keep the training results
            log.warning("ONNX Runtime timing failed: %s", short_error(e))
    return run


def _build_variant(run: AblationRun, row: dict, sets, variant: Variant, budget, seeds, overrides,
                   save_dir: Path) -> Optional[List[dict]]:
    """The variant's config per seed and its model's stats (a bad option fails here, in one
    line, before any training); None, with the row saying why, when it cannot be built."""
    try:
        cfgs = [run_config(sets, variant, budget, seed, overrides, save_dir,
                           slug(f"{variant.name}-s{seed}")) for seed in seeds]
        cfg0 = cfgs[0]
        run.size = run.size or int((cfg0.get("eval") or {}).get("img_size") or cfg0["train"].get("img_size", 320))
        row["stats"] = model_stats(cfg0, run.size)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # a variant that cannot be built: a row saying why
        row["error"] = short_error(e)
        log.warning("variant '%s' failed: %s", variant.name, row["error"])
        return None
    return cfgs


def _train_variant(run: AblationRun, row: dict, aset: AblationSet, seeds, cfgs, progress: bool) -> None:
    """One training run per seed; a failed run is a note in the row, the rest goes on."""
    from ..engine.trainer import Trainer

    for seed, cfg in zip(seeds, cfgs):
        log.info("ablate %s: variant '%s', seed %d", aset.name, row["name"], seed)
        t0 = time.perf_counter()
        try:
            result = Trainer(cfg, progress=progress).train()
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one failed run is a note in the table, the rest goes on
            row["errors"].append(short_error(e))
            log.warning("variant '%s' seed %d failed: %s", row["name"], seed, row["errors"][-1])
            continue
        row["times"].append(time.perf_counter() - t0)
        metrics = result.get("metrics") or {}
        row["metrics"].append({k: float(metrics.get(k, float("nan"))) for k in METRICS})
        if not run.data_note:
            run.data_note = data_note(cfg)


def model_stats(cfg: dict, size: int) -> dict:
    """Params, GFLOPs, peak activation memory (whole model) and the feature pyramid's: the peak
    of the neck's own tensors (backbone features excluded) and the size of its outputs."""
    import torch

    from .. import build_model
    from ..benchmark.memory import PeakActivationMemory, peak_activation_bytes
    from ..data import load_data_config
    from ..models.info import count_params, measure

    model_cfg = copy.deepcopy(cfg["model"])
    names = load_data_config(copy.deepcopy(cfg["data"])).names
    if names:
        model_cfg["num_classes"] = len(names)
    model = build_model({"model": model_cfg}).eval()
    if hasattr(model, "fuse"):
        model.fuse()
    flops, _, _ = measure(model, size)
    stats = {"model": model, "params": count_params(model), "gflops": flops / 1e9,
             "peak_mb": peak_activation_bytes(model, size) / 2 ** 20}
    with torch.inference_mode():
        feats = model.backbone.forward_features(torch.zeros(1, 3, size, size))
        tracker = PeakActivationMemory()
        with tracker:
            outs = model.neck(feats)
        stats["fpn_peak_mb"] = tracker.peak / 2 ** 20
        stats["fpn_out_mb"] = sum(o.numel() * o.element_size() for o in outs) / 2 ** 20
    return stats


def ort_latency(models: Dict[str, Any], size: int, folder: Path, iters: int, threads: int) -> Dict[str, float]:
    """Median ONNX Runtime ms at batch 1 per model, of the deployed graph users ship (fused,
    re-parameterised), timed as `cspdet benchmark` does: alternating blocks of back-to-back
    runs on one shared thread pool (runs interleaved one at a time distort small models)."""
    from ..benchmark.runner import make_runner
    from ..benchmark.timing import time_blocks
    from ..export.onnx_export import export_onnx
    from ..export.onnx_runtime import use_global_thread_pool

    use_global_thread_pool(threads)
    runners = {}
    for i, (name, model) in enumerate(models.items()):
        path = export_onnx(copy.deepcopy(model).eval(), folder / f"variant{i}_{size}.onnx", size)
        runners[name] = make_runner("onnxruntime", None, path, size, 1, threads)
    rounds = max(3, iters // 5)
    samples = time_blocks(runners, rounds=rounds, block=5, warmup=3, desc="ORT latency")
    return {k: 1000.0 * statistics.median(v) for k, v in samples.items()}


def data_note(cfg: dict) -> str:
    """The data a run used: the data YAML, generator kind and textures (from the README)."""
    from ..data import load_data_config

    d = load_data_config(copy.deepcopy(cfg["data"]))
    note = f"{Path(d.source).name if d.source else 'inline'} at {d.root}"
    readme = Path(d.root) / "README.txt"
    if readme.is_file():
        for line in readme.read_text(encoding="utf-8").splitlines():
            if line.startswith("textures:"):
                note += f" ({line})"
    return note


def short_error(e: BaseException) -> str:
    """An exception in one table cell: its type and first line."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:200].replace("|", "/")


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)
