"""The benchmark's markdown: the speed table, the CSP pairs, the targets and the ORT profiles,
written between two markers of a results file (the rest of the file is kept)."""
from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .machine import load_line, machine_line
from .models import PEERS, Model
from .ort_profile import POOL_OPS, REORDER_OPS, share_of
from .runner import INT8_ENGINE
from .timing import ratio

START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
FLAGSHIP = "csppelee_efm_sam"
ENGINE_NAMES = {"pytorch": "PyTorch", "onnxruntime": "ORT", "opencv": "OpenCV", "int8": "ORT INT8",
                "openvino": "OpenVINO", "openvino-int8": "OpenVINO INT8"}
# The paper's ImageNet figures (docs/paper.md): (params M, BFLOPs) of base -> CSP.
PAPER = {("peleenet", "csppeleenet"): ((2.79, 1.017), (2.83, 0.888)),
         ("resnet10", "cspresnet10"): ((5.24, 2.273), (2.73, 1.905)),
         ("resnet50", "cspresnet50"): ((22.73, 9.74), (21.57, 8.97)),
         ("resnext50", "cspresnext50"): ((22.19, 10.11), (20.50, 7.93)),
         ("darknet53", "cspdarknet53"): ((41.57, 18.57), (27.61, 13.07))}
# Speed targets: CSP / base latency ratio limits; the rest must be faster than its base.
# CSPPeleeNet against PeleeNet is held to 0.93x: a layout with the paper's own params and FLOPs
# cannot run faster on ORT at 2 threads (its latency follows its FLOPs: the layouts sweep in
# benchmarks/csppeleenet_layouts.py and benchmarks/RESULTS.md).
PAIR_LIMITS = {("peleenet", "csppeleenet"): 0.93, ("pelee_efm_sam", FLAGSHIP): 0.93}


@dataclass
class RunSettings:
    """How the run was made, as the table's notes say it."""
    engines: Sequence[str]
    sizes: Sequence[int]
    threads: int
    iters: int
    block: int
    warmup: int
    throughput_batch: int
    int8: bool
    deploy: bool
    load_before: str
    command: str
    shared_note: str = ""

    @property
    def int8_columns(self) -> List[str]:
        """The INT8 engines timed: ORT's beside ONNX Runtime, OpenVINO's beside OpenVINO."""
        return [INT8_ENGINE[e] for e in self.engines if e in INT8_ENGINE] if self.int8 else []

    @property
    def with_int8(self) -> bool:
        """Whether ONNX Runtime's INT8 column is in the run."""
        return "int8" in self.int8_columns


@dataclass
class Run:
    """One run's models and figures (:func:`detector.benchmark.run.benchmark`'s returns)."""
    models: List[Model]
    sizes_of: Dict[str, List[int]]
    results: Dict[tuple, dict]
    rounds_of: Dict[tuple, List[float]]
    pairs: List[Tuple[Model, Model, int]]
    profiles: Dict[Tuple[str, int, str], Dict[str, dict]]


def fmt(v, spec=".1f", missing="-") -> str:
    return missing if v is None else format(v, spec)


def fmt_ms(r: dict) -> str:
    if not r or "ms" not in r:
        return "-"
    return f"{r['ms']:.2f} ({r['min_ms']:.2f}-{r['max_ms']:.2f})"


def fmt_ratio(r, digits: int = 2) -> str:
    """``median x (min-max)``; more digits where the compared models differ by about 1%."""
    return "-" if r is None else f"{r[0]:.{digits}f}x ({r[1]:.{digits}f}-{r[2]:.{digits}f})"


def markdown(run: Run, settings: RunSettings) -> str:
    """The whole section, markers included."""
    lines = [START, ""] + notes(settings) + [""]
    table, errors = speed_table(run, settings)
    lines += table + fastest_engine_lines(run, settings) + peer_lines(run, settings) + pairs_table(run, settings)
    lines += targets(run, settings.sizes[0])
    ort = {k: v for k, v in run.profiles.items() if not k[2].startswith("OpenVINO")}
    ov = {k: v for k, v in run.profiles.items() if k[2].startswith("OpenVINO")}
    if ort:
        lines += ["", "### ONNX Runtime per-op profile (--profile)", ""]
        for (name, size, label), prof in ort.items():
            lines += profile_markdown(name, size, prof, label)
    if ov:
        lines += ["", "### OpenVINO per-layer profile (--profile, PERF_COUNT; layer type / kernel chosen)", ""]
        for (name, size, label), prof in ov.items():
            lines += openvino_profile_markdown(name, size, prof, label)
    if errors:
        lines += ["", "Not run: " + "; ".join(errors)]
    return "\n".join(lines + ["", END])


def notes(s: RunSettings) -> List[str]:
    """The heading and how the figures were taken."""
    ours = ("deployed graph (BatchNorm folded, re-parameterised: detector/models/deploy.py)" if s.deploy
            else "BN-folded training graph (--no-deploy)")
    lines = ["## Speed: our detectors and peers (tools/benchmark.py)", "",
             f"- Machine: {machine_line(s.threads)}.",
             f"- Load: {s.load_before} before the run, {load_line()} after it.",
             f"- Latency: batch 1, ms, median over {s.iters} rounds (min-max of the rounds in brackets); each "
             f"round runs every model in turn for a block of {s.block} back-to-back runs (median of the "
             f"block), after {s.warmup} warm-up runs. ONNX Runtime sessions share one thread pool. "
             "Random weights (speed does not depend on them), float32"
             + (", ORT INT8 = static QDQ quantization (per-channel int8 weights, uint8 activations)"
                if s.with_int8 else "")
             + (", OpenVINO INT8 = NNCF post-training quantization of the same fp32 file"
                if "openvino-int8" in s.int8_columns else "")
             + (". OpenVINO runs the fp32 ONNX files with its default precision hint (bf16 on CPUs "
                "with AMX or AVX-512 BF16, as users get it)" if "openvino" in s.engines else "") + ".",
             f"- Ours: {ours}. "
             "GFLOPs: torch.utils.flop_counter (multiply-add = 2), batch 1, of the trained network. Peak act.: largest "
             "total of activation tensors alive at once in a PyTorch forward (weights excluded).",
             f"- Date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}. Command: `{s.command}`"]
    if s.throughput_batch:
        lines.append(f"- Throughput: batch {s.throughput_batch}, images/s.")
    if s.shared_note:
        lines.append(f"- Note: {s.shared_note}")
    return lines


def speed_table(run: Run, s: RunSettings) -> Tuple[List[str], List[str]]:
    """One row per detector and size (backbones are in the pairs table); and what did not run."""
    shown = list(s.engines) + s.int8_columns
    head = ["model", "size", "params (M)", "GFLOPs", "peak act. (MB)"] + [f"{ENGINE_NAMES[e]} ms" for e in shown]
    if s.throughput_batch:
        head += [f"{ENGINE_NAMES[e]} img/s" for e in s.engines]
    lines, errors = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)], []
    for m in run.models:
        if m.kind == "backbone":
            continue
        for size in run.sizes_of[m.name]:
            st = m.stats[size]
            label = m.name + (" (peer)" if m.kind == "peer" else "")
            row = [label, str(size), f"{st['params'] / 1e6:.2f}", f"{st['gflops']:.2f}", f"{st['peak_mb']:.1f}"]
            row += [_cell(run.results, (m.name, size, e, 1), fmt_ms, errors, f"{m.name} {size} {e}")
                    for e in shown]
            if s.throughput_batch:
                b = s.throughput_batch
                row += [_cell(run.results, (m.name, size, e, b), lambda r: fmt(r.get("img_s")), errors,
                              f"{m.name} {size} {e} batch {b}") for e in s.engines]
            lines.append("| " + " | ".join(row) + " |")
    return lines, errors


def _cell(results, key, formatter, errors: List[str], what: str) -> str:
    r = results.get(key, {})
    if "error" in r:
        errors.append(f"{what}: {r['error']}")
        return "n/a"
    return formatter(r)


def peer_lines(run: Run, s: RunSettings) -> List[str]:
    """Where the peers come from, and our first model against each, per round."""
    peers = [m for m in run.models if m.kind == "peer"]
    if not peers:
        return []
    lines = ["", "Peers: " + "; ".join(f"{m.name} from `{PEERS[m.name]}`" for m in peers)
             + " (Ultralytics, random weights, their export graph with box decoding; ours: the default "
               "export graph, also ending in decoded boxes; NMS is outside every graph)."]
    ours = [m for m in run.models if m.kind == "ours"]
    for engine in ("onnxruntime", "openvino"):
        if ours and engine in s.engines:
            s0 = run.sizes_of[ours[0].name][0]
            lines += ["", f"Ratios at {s0} ({ENGINE_NAMES[engine]} fp32, per round, same run): " + "; ".join(
                f"{o.name} / {p.name} "
                f"{fmt_ratio(ratio(run.rounds_of, (o.name, s0, engine, 1), (p.name, s0, engine, 1)))}"
                for o in ours[:1] for p in peers if s0 in run.sizes_of[p.name]) + "."]
    return lines


def fastest_engine_lines(run: Run, s: RunSettings) -> List[str]:
    """Which engine runs each detector fastest at batch 1 (float32, and with INT8 too)."""
    file_engines = [e for e in s.engines if e != "pytorch"]
    if len(file_engines) < 2:
        return []
    lines = ["", "Fastest engine at batch 1 (median ms):"]
    for m in run.models:
        if m.kind == "backbone":
            continue
        for size in run.sizes_of[m.name]:
            def best(engines):
                timed = [(run.results[(m.name, size, e, 1)]["ms"], e) for e in engines
                         if "ms" in run.results.get((m.name, size, e, 1), {})]
                return min(timed) if timed else None
            fp32, any_ = best(s.engines), best(list(s.engines) + s.int8_columns)
            if fp32 is None:
                continue
            text = f"- {m.name} @ {size}: float32 {ENGINE_NAMES[fp32[1]]} ({fp32[0]:.2f} ms)"
            if any_ and any_ != fp32:
                text += f"; with INT8 {ENGINE_NAMES[any_[1]]} ({any_[0]:.2f} ms)"
            lines.append(text)
    return lines


def pairs_table(run: Run, s: RunSettings) -> List[str]:
    """CSP vs non-CSP: each figure base -> CSP with the change, beside the paper's change."""
    if not run.pairs:
        return []
    int8 = s.with_int8
    lines = ["", "### CSP vs non-CSP (the paper's claims, on our implementations)", "",
             "| pair | size | params (M) | GFLOPs | ORT ms | ORT CSP / base (per round) | "
             + ("ORT INT8 ms | " if int8 else "") + "PyTorch ms | peak act. (MB) | paper: params, FLOPs |",
             "|---|---|---|---|---|---|" + ("---|" if int8 else "") + "---|---|---|"]
    for base, csp, size in run.pairs:
        def latency(engine):
            return lambda m: run.results.get((m.name, size, engine, 1), {}).get("ms")
        changes = [(lambda m: m.stats[size]["params"] / 1e6, ".2f"), (lambda m: m.stats[size]["gflops"], ".3f"),
                   (latency("onnxruntime"), ".2f")]
        cells = [_change(get(base), get(csp), spec) for get, spec in changes]
        cells.append(fmt_ratio(ratio(run.rounds_of, (csp.name, size, "onnxruntime", 1),
                                     (base.name, size, "onnxruntime", 1))))
        more = ([(latency("int8"), ".2f")] if int8 else []) + [
            (latency("pytorch"), ".1f"), (lambda m: m.stats[size]["peak_mb"], ".1f")]
        cells += [_change(get(base), get(csp), spec) for get, spec in more]
        cells.append(_paper_change(base.name, csp.name))
        lines.append(f"| {base.name} -> {csp.name} | {size} | " + " | ".join(cells) + " |")
    return lines + ["", "Backbones are ImageNet classifiers (1000-class head) as in the paper's tables; the "
                        "paper column is the change the authors report (docs/paper.md)."]


def _change(a: Optional[float], b: Optional[float], spec: str) -> str:
    if a is None or b is None:
        return "-"
    return f"{format(a, spec)} -> {format(b, spec)} ({100 * (b - a) / a:+.0f}%)"


def _paper_change(base: str, csp: str) -> str:
    paper = PAPER.get((base, csp))
    if not paper:
        return "-"
    (pa, fa), (pb, fb) = paper
    return f"{100 * (pb - pa) / pa:+.0f}%, {100 * (fb - fa) / fa:+.0f}%"


def targets(run: Run, size: int) -> List[str]:
    """The speed targets of the project (issue 10), checked on this run's numbers."""
    out = []
    names = {m.name for m in run.models}

    def check(label, r, limit, below=True):
        if r is None:
            return
        ok = r[0] <= limit if below else r[0] >= limit
        out.append(f"| {label} | {fmt_ratio(r)} | {'<=' if below else '>='} {limit} | {'yes' if ok else 'NO'} |")

    def ort(name, s, e="onnxruntime"):
        return (name, s, e, 1)

    for base, csp, s in run.pairs:
        limit = PAIR_LIMITS.get((base.name, csp.name), 1.0)
        check(f"{csp.name} / {base.name} @ {s}, ORT fp32",
              ratio(run.rounds_of, ort(csp.name, s), ort(base.name, s)), limit if limit < 1 else 0.999)
    if FLAGSHIP in names:
        for peer, limit in (("yolov3-tiny", 0.70), ("yolo11n", 1.25)):
            if peer in names:
                check(f"{FLAGSHIP} / {peer} @ {size}, ORT fp32",
                      ratio(run.rounds_of, ort(FLAGSHIP, size), ort(peer, size)), limit)
        if "yolo11n" in names:
            check(f"{FLAGSHIP} INT8 / yolo11n fp32 @ {size}, ORT",
                  ratio(run.rounds_of, ort(FLAGSHIP, size, "int8"), ort("yolo11n", size)), 0.80)
            check(f"{FLAGSHIP} / yolo11n @ {size}, OpenVINO fp32",
                  ratio(run.rounds_of, ort(FLAGSHIP, size, "openvino"), ort("yolo11n", size, "openvino")), 0.85)
        check(f"{FLAGSHIP} INT8 / its fp32 @ {size}, ORT",
              ratio(run.rounds_of, ort(FLAGSHIP, size, "int8"), ort(FLAGSHIP, size)), 0.50)
        check(f"{FLAGSHIP} INT8 / its fp32 @ {size}, OpenVINO",
              ratio(run.rounds_of, ort(FLAGSHIP, size, "openvino-int8"), ort(FLAGSHIP, size, "openvino")), 0.50)
    prof = run.profiles.get((FLAGSHIP, size, "fp32"))
    if prof:
        share = share_of(prof, REORDER_OPS + POOL_OPS)
        out.append(f"| {FLAGSHIP} reorder + pooling share of ORT kernel time | {100 * share:.1f}% | <= 6% | "
                   f"{'yes' if share <= 0.06 else 'NO'} |")
    if not out:
        return []
    return ["", "### Targets (this run)", "", "| check | measured (median, min-max over rounds) | target | met |",
            "|---|---|---|---|"] + out


def profile_markdown(name: str, size: int, prof: Dict[str, dict], label: str = "fp32") -> List[str]:
    """One model's ORT profile: the reorder and pooling shares, then kernel time per op type."""
    reorder, pool = share_of(prof, REORDER_OPS), share_of(prof, POOL_OPS)
    lines = [f"**{name} @ {size} ({label})**: reorders {100 * reorder:.1f}%, pooling {100 * pool:.1f}%, "
             f"reorder + pooling {100 * (reorder + pool):.1f}% of ORT kernel time", "",
             "| op | kernel time | nodes per run |", "|---|---|---|"]
    for op, v in prof.items():
        if v["share"] >= 0.001 or op in REORDER_OPS:
            lines.append(f"| {op} | {100 * v['share']:.1f}% | {v['nodes']} |")
    return lines + [""]


def openvino_profile_markdown(name: str, size: int, prof: Dict[str, dict], label: str) -> List[str]:
    """One model's OpenVINO profile: executed time per layer type and kernel; ``ref_*``
    kernels are OpenVINO's slow reference paths."""
    ref = sum(v["share"] for k, v in prof.items() if "/ ref" in k)
    lines = [f"**{name} @ {size} ({label})**: reference (slow-path) kernels {100 * ref:.1f}% of the time", "",
             "| layer type / kernel | time | nodes per run |", "|---|---|---|"]
    lines += [f"| {k} | {100 * v['share']:.1f}% | {v['nodes']} |" for k, v in prof.items() if v["share"] >= 0.001]
    return lines + [""]


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
