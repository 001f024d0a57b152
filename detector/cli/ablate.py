"""Train every variant of one of the paper's ablations and write its table.

    cspdet ablate --list
    cspdet ablate maxout --quick                      # a CPU budget, 2 seeds
    cspdet ablate neck --budget full --device cuda    # the full run (GPU)
    cspdet ablate gamma --quick --variants "gamma 0.25,gamma 0.75" train.epochs=5

The sets, their variants and the budgets are data (configs/ablations/paper.yaml), not code: every
variant of a set is trained through the project's Trainer with the same budget, data and seeds;
then each variant's model is measured once (params, GFLOPs, ONNX Runtime latency of the deployed
graph in alternating blocks, peak activation memory and the feature pyramid's own activation memory)
and the table gives AP / AP50 / AP75 as mean +- standard deviation over the seeds. A variant
that cannot be built or trained (e.g. an option that does not exist yet) is a row saying why,
and the other variants still run.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import logging
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence

import yaml

from ..config import ConfigError, configs_root, find_config

DEFAULT_SETS = configs_root() / "ablations" / "paper.yaml"
METRICS = ("AP", "AP50", "AP75")
log = logging.getLogger("cspdet.ablate")


class AblationError(ValueError):
    """A bad ablations file, set name or option: one clear message for the user."""


# --------------------------------------------------------------------------- the sets file
@dataclass
class Variant:
    name: str
    config: str = ""                                 # its own base config (default: the set's)
    set: Dict[str, Any] = field(default_factory=dict)  # dotted key -> value


@dataclass
class AblationSet:
    name: str
    title: str
    variants: List[Variant]
    note: str = ""


def resolve_path(path, bases: Sequence[Path]) -> Path:
    """A path as given (absolute, or from the working directory), else from the first of
    ``bases`` where it exists (the sets file's folder, the repository)."""
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute() or p.exists():
        return p.resolve()
    for base in bases:
        if (Path(base) / p).exists():
            return (Path(base) / p).resolve()
    try:  # a shipped config, by repository path or name (configs/data/proxy.yaml, proxy)
        return find_config(p).resolve()
    except ConfigError:
        return p


def load_sets(path=DEFAULT_SETS) -> dict:
    """Read and check the ablations YAML (``defaults``, ``budgets``, ``sets``)."""
    path = Path(path)
    if not path.is_file():
        raise AblationError(f"ablations file not found: {path}")
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    unknown = set(raw) - {"defaults", "budgets", "sets"}
    if unknown:
        raise AblationError(f"{path}: unknown top-level keys {sorted(unknown)} "
                            "(expected defaults, budgets, sets)")
    sets = {}
    for name, spec in (raw.get("sets") or {}).items():
        if not isinstance(spec, dict) or not spec.get("variants"):
            raise AblationError(f"{path}: set '{name}' needs a list of variants")
        variants = []
        for v in spec["variants"]:
            extra = set(v) - {"name", "config", "set"} if isinstance(v, dict) else {"?"}
            if extra or "name" not in v:
                raise AblationError(f"{path}: set '{name}': a variant is {{name, config?, set?}}, "
                                    f"got {v!r}")
            variants.append(Variant(str(v["name"]), str(v.get("config") or ""), dict(v.get("set") or {})))
        if len({v.name for v in variants}) != len(variants):
            raise AblationError(f"{path}: set '{name}' has two variants with one name")
        sets[name] = AblationSet(name, str(spec.get("title") or name), variants, str(spec.get("note") or ""))
    return {"defaults": dict(raw.get("defaults") or {}), "budgets": dict(raw.get("budgets") or {}),
            "sets": sets, "bases": [path.resolve().parent]}


def set_dotted(cfg: dict, key: str, value) -> None:
    """``cfg['a']['b'] = value`` for ``a.b`` (a value replaces what was there, mappings too);
    ``*`` addresses every item of a list, a number one item; missing sections are created
    (a misspelt key then fails in the config check, which names it)."""
    parts = key.split(".")
    if parts[-1] == "*":
        raise AblationError(f"'{key}': '*' cannot be the last part")
    nodes = [cfg]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        nxt = []
        for node in nodes:
            if isinstance(node, list):
                items = node if part == "*" else None
                if items is None:
                    try:
                        index = int(part)
                        node[index]
                    except (ValueError, IndexError):
                        raise AblationError(f"'{key}': '{part}' is not an index of the list at "
                                            f"'{'.'.join(parts[:i])}'") from None
                    if last:
                        node[index] = copy.deepcopy(value)
                    else:
                        nxt.append(node[index])
                elif last:
                    raise AblationError(f"'{key}': '*' cannot be the last part")
                else:
                    nxt.extend(items)
            elif isinstance(node, dict):
                if part == "*":
                    raise AblationError(f"'{key}': '*' needs a list at '{'.'.join(parts[:i])}'")
                if last:
                    node[part] = copy.deepcopy(value)
                else:
                    if node.get(part) is None:
                        node[part] = {}
                    nxt.append(node[part])
            else:
                raise AblationError(f"'{key}': '{'.'.join(parts[:i])}' is a value, not a section")
        nodes = nxt


def run_config(sets: dict, variant: Variant, budget: dict, seed: int, overrides: Sequence[str],
               save_dir: Path, run_name: str) -> dict:
    """The full training config (a dict) of one variant at one seed."""
    from ..config import apply_overrides, load_config, load_yaml
    from ..models.detector import resolve_backbone_config

    bases = sets["bases"]
    defaults = sets["defaults"]
    config = variant.config or defaults.get("config")
    if not config:
        raise AblationError("no config: set defaults.config in the ablations file")
    raw = load_config(str(resolve_path(config, bases)))
    source = raw.pop("_source", "")
    model = raw.get("model") or {}
    if isinstance(model.get("backbone"), (str, Path)):  # inline, so model.backbone.* keys reach it
        model["backbone"] = resolve_backbone_config(resolve_path(model["backbone"], bases))
    data = defaults.get("data") or raw.get("data")
    if isinstance(data, (str, Path)):
        data_path = resolve_path(data, bases if defaults.get("data") else [Path(source).parent])
        data = load_yaml(data_path)
        data["_source"] = str(data_path)
    raw["data"] = data
    for key, value in (budget.get("set") or {}).items():
        set_dotted(raw, key, value)
    for key, value in variant.set.items():
        set_dotted(raw, key, value)
    raw.setdefault("train", {})
    raw["train"].update(seed=int(seed), name=run_name, save_dir=str(save_dir), exist_ok=True)
    return apply_overrides(raw, overrides)


# --------------------------------------------------------------------------- measuring
def model_stats(cfg: dict, size: int) -> dict:
    """Params, GFLOPs, peak activation memory (whole model) and the feature pyramid's: the peak
    of the neck's own tensors (backbone features excluded) and the size of its outputs."""
    import torch

    from .. import build_model
    from ..data import load_data_config
    from ..models.info import count_params, measure
    from .benchmark import PeakActivationMemory, peak_activation_bytes

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
    import numpy as np

    from ..export.onnx_export import export_onnx
    from ..export.onnx_runtime import make_session, use_global_thread_pool
    from .benchmark import time_blocks

    use_global_thread_pool(threads)
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    runners = {}
    for i, (name, model) in enumerate(models.items()):
        path = export_onnx(copy.deepcopy(model).eval(), folder / f"variant{i}_{size}.onnx", size)
        session = make_session(path, threads=threads, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        runners[name] = (lambda s=session, f=feed: s.run(None, f))
    rounds = max(3, iters // 5)
    samples = time_blocks(runners, rounds=rounds, block=5, warmup=3, desc="ORT latency")
    return {k: 1000.0 * statistics.median(v) for k, v in samples.items()}


# --------------------------------------------------------------------------- the table
def mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def machine_line(threads: int) -> str:
    import onnxruntime
    import torch

    from ..common import cpu_name

    cpu = cpu_name()
    try:
        load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        load = "?"
    return (f"{cpu}, {os.cpu_count()} logical CPUs, {threads} threads; torch {torch.__version__}, "
            f"onnxruntime {onnxruntime.__version__}; load average {load}")


def markdown(aset: AblationSet, rows: List[dict], budget_name: str, budget: dict, seeds, size: int,
             command: str, threads: int, data_note: str) -> str:
    first = next((r for r in rows if "stats" in r), None)
    lines = [f"### {aset.title} (`{aset.name}`)", "",
             f"- Command: `{command}`",
             f"- Machine: {machine_line(threads)}; {datetime.date.today().isoformat()}.",
             f"- Budget `{budget_name}`: " + "; ".join(f"{k}={v}" for k, v in (budget.get('set') or {}).items())
             + f"; seeds {list(seeds)}.",
             f"- Data: {data_note}.",
             f"- Params / GFLOPs / memory at {size}x{size}, batch 1; ORT ms: median at batch 1, "
             "deployed graphs timed in alternating blocks of back-to-back runs; "
             "FPN = the neck alone (its peak of live tensors, "
             "backbone features excluded, and its output pyramid); AP: mean ± sd over seeds."]
    if aset.note:
        lines.append(f"- {aset.note}")
    lines += ["", "| variant | params (M) | GFLOPs | ORT ms | peak act. (MB) | FPN peak (MB) | "
              "FPN out (MB) | FPN vs first | AP | AP50 | AP75 | AP per seed | train s / run |",
              "|---|" + "---:|" * 12]
    for r in rows:
        if "stats" not in r:
            lines.append(f"| {r['name']} | failed: {r['error']} |" + " |" * 11)
            continue
        s = r["stats"]
        ratio = s["fpn_peak_mb"] / first["stats"]["fpn_peak_mb"] if first else float("nan")
        per_seed = ", ".join(f"{m['AP']:.4f}" for m in r["metrics"])
        errors = f" ({len(r['errors'])} seed(s) failed: {r['errors'][0]})" if r.get("errors") else ""
        times = statistics.mean(r["times"]) if r["times"] else float("nan")
        ms = r.get("ort_ms")
        lines.append(
            f"| {r['name']} | {s['params'] / 1e6:.3f} | {s['gflops']:.3f} | "
            f"{'-' if ms is None else f'{ms:.2f}'} | {s['peak_mb']:.2f} | {s['fpn_peak_mb']:.2f} | "
            f"{s['fpn_out_mb']:.2f} | {ratio:.2f}x | "
            + " | ".join(mean_sd([m[k] for m in r["metrics"]]) for k in METRICS)
            + f" | {per_seed}{errors} | {times:.0f} |")
    saved = [r for r in rows if "stats" in r and r is not first]
    if first and saved:
        lines.append("")
        for r in saved:
            f0, f1 = first["stats"], r["stats"]
            lines.append(f"- `{first['name']}` vs `{r['name']}`: feature-pyramid peak "
                         f"{f0['fpn_peak_mb']:.2f} vs {f1['fpn_peak_mb']:.2f} MB "
                         f"({100 * (1 - f0['fpn_peak_mb'] / f1['fpn_peak_mb']):.0f}% saved by `{first['name']}`), "
                         f"pyramid outputs {f0['fpn_out_mb']:.2f} vs {f1['fpn_out_mb']:.2f} MB "
                         f"({100 * (1 - f0['fpn_out_mb'] / f1['fpn_out_mb']):.0f}% smaller).")
    return "\n".join(lines) + "\n"


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:200].replace("|", "/")


# --------------------------------------------------------------------------- the run
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="cspdet ablate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("set", nargs="?", help="ablation set (see --list)")
    p.add_argument("overrides", nargs="*", help="key=value training-config overrides for every variant")
    p.add_argument("--list", action="store_true", help="list the sets and their variants")
    p.add_argument("--sets-file", default=str(DEFAULT_SETS), help="ablations YAML (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="same as --budget quick (fits a CPU)")
    p.add_argument("--budget", default="", help="budget in the sets file (quick, full); default full")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the budget's)")
    p.add_argument("--variants", default="", help="comma-separated subset of the set's variants")
    p.add_argument("--save-dir", default="runs/ablate", help="run folders go in SAVE_DIR/SET")
    p.add_argument("--output", default="", help="markdown file (default: SAVE_DIR/SET/ablation.md)")
    p.add_argument("--ort-iters", type=int, default=30, help="timed ONNX Runtime rounds")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = the CPU count)")
    p.add_argument("--device", default="", help="train.device for every run (cpu, cuda)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return _run(args, argv)
    except AblationError as e:
        print(f"cspdet ablate: {e}", file=sys.stderr)
        return 2


def _run(args, argv) -> int:
    sets = load_sets(args.sets_file)
    if args.list or not args.set:
        for name, s in sets["sets"].items():
            print(f"{name:<12} {s.title}: " + ", ".join(v.name for v in s.variants))
        if not args.set and not args.list:
            print("cspdet ablate: name a set (above)", file=sys.stderr)
            return 2
        return 0
    if args.set not in sets["sets"]:
        raise AblationError(f"unknown set '{args.set}'; choose one of {', '.join(sets['sets'])}")
    aset = sets["sets"][args.set]
    budget_name = "quick" if args.quick else (args.budget or "full")
    if budget_name not in sets["budgets"]:
        raise AblationError(f"unknown budget '{budget_name}'; the file has {', '.join(sets['budgets'])}")
    budget = sets["budgets"][budget_name]
    seeds = list(args.seeds or budget.get("seeds") or [0, 1])
    variants = aset.variants
    if args.variants:
        wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
        missing = [w for w in wanted if w not in {v.name for v in variants}]
        if missing:
            raise AblationError(f"set '{aset.name}' has no variant {missing}; it has "
                                + ", ".join(v.name for v in variants))
        variants = [v for v in variants if v.name in wanted]
    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"train.device={args.device}")
    for o in overrides:
        if "=" not in o:
            raise AblationError(f"override '{o}' must look like key.subkey=value")
    save_dir = Path(args.save_dir) / aset.name
    save_dir.mkdir(parents=True, exist_ok=True)
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())

    from ..engine.trainer import Trainer

    rows: List[dict] = []
    size = None
    data_note = ""
    for variant in variants:
        row = {"name": variant.name, "metrics": [], "times": [], "errors": []}
        rows.append(row)
        try:
            cfgs = [run_config(sets, variant, budget, seed, overrides, save_dir,
                               _slug(f"{variant.name}-s{seed}")) for seed in seeds]
            cfg0 = cfgs[0]
            size = size or int((cfg0.get("eval") or {}).get("img_size") or cfg0["train"].get("img_size", 320))
            # build the model before training: a bad option fails here, in one line
            row["stats"] = model_stats(cfg0, size)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # a variant that cannot be built: a row saying why
            row["error"] = _short(e)
            log.warning("variant '%s' failed: %s", variant.name, row["error"])
            continue
        for seed, cfg in zip(seeds, cfgs):
            log.info("ablate %s: variant '%s', seed %d", aset.name, variant.name, seed)
            t0 = time.perf_counter()
            try:
                result = Trainer(cfg, progress=not args.no_progress).train()
            except KeyboardInterrupt:
                raise
            except Exception as e:  # one failed run is a note in the table, the rest goes on
                row["errors"].append(_short(e))
                log.warning("variant '%s' seed %d failed: %s", variant.name, seed, row["errors"][-1])
                continue
            row["times"].append(time.perf_counter() - t0)
            metrics = result.get("metrics") or {}
            row["metrics"].append({k: float(metrics.get(k, float("nan"))) for k in METRICS})
            if not data_note:
                data_note = _data_note(cfg)
        if not row["metrics"]:
            row.pop("stats")
            row["error"] = row["errors"][0] if row["errors"] else "no run finished"
    built = {r["name"]: r["stats"].pop("model") for r in rows if "stats" in r}
    if built:
        try:
            for name, ms in ort_latency(built, size, save_dir, args.ort_iters, threads).items():
                next(r for r in rows if r["name"] == name)["ort_ms"] = ms
        except Exception as e:  # latency is one column; keep the training results
            log.warning("ONNX Runtime timing failed: %s", _short(e))
    command = "cspdet ablate " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    text = markdown(aset, rows, budget_name, budget, seeds, size or 0, command, threads,
                    data_note or "(no run finished)")
    out = Path(args.output) if args.output else save_dir / "ablation.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    print(f"written to {out}")
    return 0 if any("stats" in r for r in rows) else 1


def _data_note(cfg: dict) -> str:
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


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


if __name__ == "__main__":
    sys.exit(main())
