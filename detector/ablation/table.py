"""An ablation's markdown table: one row per variant, AP as mean ± sd over the seeds, each
variant's difference to the first (the reference) against the seed spread, and the feature
pyramid of the first variant against each other one."""
from __future__ import annotations

import datetime
import statistics
from typing import Sequence

from .run import METRICS, AblationRun
from .sets import AblationSet

COLUMNS = ("variant", "params (M)", "GFLOPs", "ORT ms", "peak act. (MB)", "FPN peak (MB)", "FPN out (MB)",
           "FPN vs first", "AP", "AP50", "AP75", "AP per seed", "AP spread", "ΔAP vs ref", "ΔAP50 vs ref",
           "separates (AP / AP50)", "train s / run")


def spread(values: Sequence[float]) -> str:
    """The seeds' range, min-max (what a difference between variants must exceed)."""
    if len(values) < 2:
        return "-"
    return f"{min(values):.4f}-{max(values):.4f}"


def separates(values: Sequence[float], ref: Sequence[float]) -> str:
    """``yes`` when the two variants' seed ranges do not overlap (every seed of one above every
    seed of the other), ``no`` when they do, ``n/a`` with fewer than two seeds each."""
    if len(values) < 2 or len(ref) < 2:
        return "n/a"
    return "yes" if min(values) > max(ref) or max(values) < min(ref) else "no"


def delta(values: Sequence[float], ref: Sequence[float]) -> str:
    """The variant's mean minus the reference's, signed."""
    if not values or not ref:
        return "-"
    return f"{statistics.mean(values) - statistics.mean(ref):+.4f}"


def mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def machine_note(threads: int) -> str:
    """The machine, its libraries and its load, as the table's notes give them."""
    from ..benchmark.machine import load_average, machine_line

    line = machine_line(threads, ("torch", "onnxruntime"), per_engine=False)
    return f"{line}; load average {load_average(1) or '?'}"


def markdown(aset: AblationSet, run: AblationRun, budget_name: str, budget: dict, seeds, command: str,
             threads: int) -> str:
    size = run.size or 0
    lines = [f"### {aset.title} (`{aset.name}`)", "",
             f"- Command: `{command}`",
             f"- Machine: {machine_note(threads)}; {datetime.date.today().isoformat()}.",
             f"- Budget `{budget_name}`: " + "; ".join(_budget_items(budget)) + f"; seeds {list(seeds)}.",
             f"- Data: {run.data_note or '(no run finished)'}.",
             f"- Params / GFLOPs / memory at {size}x{size}, batch 1; ORT ms: median at batch 1, "
             "deployed graphs timed in alternating blocks of back-to-back runs; "
             "FPN = the neck alone (its peak of live tensors, "
             "backbone features excluded, and its output pyramid); AP: mean ± sd over seeds; "
             "AP spread: min-max over seeds; Δ: mean minus the first variant's (the reference); "
             "separates: the two variants' seed ranges do not overlap."]
    if aset.note:
        lines.append(f"- {aset.note}")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    first = next((r for r in run.rows if "stats" in r), None)
    lines += [_row(r, first) for r in run.rows]
    verdicts = [_verdict(r, first) for r in run.rows if "stats" in r and r is not first]
    if verdicts:
        lines += ["", *verdicts]
    return "\n".join(lines + _pyramid_lines(run, first)) + "\n"


def _row(r: dict, first) -> str:
    if "stats" not in r:
        return f"| {r['name']} | failed: {r['error']} |" + " |" * (len(COLUMNS) - 2)
    s = r["stats"]
    ratio = s["fpn_peak_mb"] / first["stats"]["fpn_peak_mb"] if first else float("nan")
    per_seed = ", ".join(f"{m['AP']:.4f}" for m in r["metrics"])
    errors = f" ({len(r['errors'])} seed(s) failed: {r['errors'][0]})" if r.get("errors") else ""
    times = statistics.mean(r["times"]) if r["times"] else float("nan")
    ap, ap50 = ([m[k] for m in r["metrics"]] for k in ("AP", "AP50"))
    if r is first:
        vs_ref = "ref | ref | ref"
    else:
        ref_ap, ref_ap50 = ([m[k] for m in first["metrics"]] for k in ("AP", "AP50"))
        vs_ref = (f"{delta(ap, ref_ap)} | {delta(ap50, ref_ap50)} | "
                  f"{separates(ap, ref_ap)} / {separates(ap50, ref_ap50)}")
    ms = r.get("ort_ms")
    return (f"| {r['name']} | {s['params'] / 1e6:.3f} | {s['gflops']:.3f} | "
            f"{'-' if ms is None else f'{ms:.2f}'} | {s['peak_mb']:.2f} | {s['fpn_peak_mb']:.2f} | "
            f"{s['fpn_out_mb']:.2f} | {ratio:.2f}x | "
            + " | ".join(mean_sd([m[k] for m in r["metrics"]]) for k in METRICS)
            + f" | {per_seed}{errors} | {spread(ap)} | {vs_ref} | {times:.0f} |")


def _verdict(r: dict, first: dict) -> str:
    """One line per variant: its AP difference to the reference against the seed spreads."""
    ap, ref = [m["AP"] for m in r["metrics"]], [m["AP"] for m in first["metrics"]]
    word = {"yes": "separates", "no": "does not separate", "n/a": "cannot tell (one seed)"}[separates(ap, ref)]
    return (f"- `{r['name']}` vs `{first['name']}`: ΔAP {delta(ap, ref)}, AP over seeds {spread(ap)} vs "
            f"{spread(ref)}: {word}.")


def _budget_items(budget: dict) -> list:
    """The budget's data file (when it names one) and its settings, ``key=value`` each."""
    items = [f"data={budget['data']}"] if budget.get("data") else []
    return items + [f"{k}={v}" for k, v in (budget.get("set") or {}).items()]


def _pyramid_lines(run: AblationRun, first) -> list:
    """The first variant's feature pyramid against each other variant's."""
    others = [r for r in run.rows if "stats" in r and r is not first]
    if not first or not others:
        return []
    lines = [""]
    f0 = first["stats"]
    for r in others:
        f1 = r["stats"]
        lines.append(f"- `{first['name']}` vs `{r['name']}`: feature-pyramid peak "
                     f"{f0['fpn_peak_mb']:.2f} vs {f1['fpn_peak_mb']:.2f} MB "
                     f"({100 * (1 - f0['fpn_peak_mb'] / f1['fpn_peak_mb']):.0f}% saved by `{first['name']}`), "
                     f"pyramid outputs {f0['fpn_out_mb']:.2f} vs {f1['fpn_out_mb']:.2f} MB "
                     f"({100 * (1 - f0['fpn_out_mb'] / f1['fpn_out_mb']):.0f}% smaller).")
    return lines
