#!/usr/bin/env python
"""Which CSPPeleeNet layouts match the paper's figures, and how fast each runs against PeleeNet.

    python benchmarks/csppeleenet_layouts.py                     # the sweep, 60 rounds per trio
    python benchmarks/csppeleenet_layouts.py --rounds 20 --no-outside

The paper gives CSPPeleeNet's params and FLOPs (2.83 M, 0.888 GFLOPs at 224) but not its
widths. ``configs/backbones/csppeleenet.yaml`` fixes stages 1-2 (fusion ``last``) and sweeps
stages 3-4 here: fusion (``both`` / ``first`` / ``last``), the partial transition's width and the
last stage's output width. Every layout whose params and FLOPs both lie within ``--envelope``
(default 3%) of the paper's is exported as deployed (BatchNorm folded, re-parameterised; the
same path as ``tools/benchmark.py``) and timed in ONNX Runtime against PeleeNet and the
shipped layout: the three alternate in blocks of back-to-back runs in one shared thread pool,
and the ratios are per round (median, min-max). The layouts with params in the envelope and
FLOPs below it are timed too (``--no-outside`` skips them), to show what a looser FLOPs bound
would buy; the ``--show-outside`` fastest of them are printed.

It answers one question of the speed target "csppeleenet <= 0.92x peleenet" (issue 10): is
there a faithful layout that meets it with a margin? Latency follows FLOPs here, so the
envelope's lower FLOPs bound is also a bound on the ratio.
"""
from __future__ import annotations

import argparse
import copy
import itertools
import shlex
import statistics
import sys
import tempfile
from pathlib import Path
from typing import List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import yaml  # noqa: E402

from detector.benchmark.machine import load_line, machine_line  # noqa: E402
from detector.benchmark.models import build_ours  # noqa: E402
from detector.benchmark.report import fmt_ratio  # noqa: E402
from detector.benchmark.runner import make_runner  # noqa: E402
from detector.benchmark.timing import ratio, set_threads, time_blocks  # noqa: E402
from detector.models import build_backbone  # noqa: E402
from detector.models.info import count_params, measure  # noqa: E402

CONFIG = ROOT / "configs" / "backbones" / "csppeleenet.yaml"
BASE = ROOT / "configs" / "backbones" / "peleenet.yaml"
SIZE = 224

# (fusion, transition_channels, out_channels) for stage 3 (stride 16) and stage 4 (stride 32)
STAGE3 = ([("both", t, 512) for t in (192, 256, 320, 384)]
          + [("last", None, o) for o in (448, 512, 576, 640)] + [("first", None, 512)])
STAGE4 = ([("both", t, o) for t in (448, 512, 576, 640, 704) for o in (704, 768, 832, 896)]
          + [("last", None, o) for o in range(704, 1409, 64)]
          + [("first", None, o) for o in (704, 768, 832, 896, 960, 1024)])


def layout_config(base: dict, s3, s4) -> dict:
    cfg = copy.deepcopy(base)
    stages = cfg["model"]["stages"]
    for idx, (fusion, tc, out) in ((2, s3), (3, s4)):
        stages[idx].pop("transition_channels", None)
        stages[idx].update(fusion=fusion, out_channels=out)
        if tc:
            stages[idx]["transition_channels"] = tc
    return cfg


def label(s3, s4) -> str:
    part = lambda s: s[0] + (f" tc {s[1]}" if s[1] else "") + f" out {s[2]}"  # noqa: E731
    return f"{part(s3)} / {part(s4)}"


def params_and_gflops(cfg: dict, tmp: Path) -> Optional[Tuple[float, float]]:
    path = tmp / "layout.yaml"
    path.write_text(yaml.safe_dump(cfg))
    try:
        with torch.device("meta"):
            model = build_backbone(path)
    except (ValueError, KeyError):
        return None  # e.g. fusion last narrower than its bypass part
    return count_params(model) / 1e6, measure(model, SIZE)[0] / 1e9


def shipped_key(base: dict) -> Tuple:
    st = base["model"]["stages"]
    return tuple((s["fusion"], s.get("transition_channels"), s["out_channels"]) for s in st[2:4])


def sweep(base: dict, paper: dict, envelope: float, outside: bool, tmp: Path) -> List[dict]:
    rows = []
    for s3, s4 in itertools.product(STAGE3, STAGE4):
        cfg = layout_config(base, s3, s4)
        pg = params_and_gflops(cfg, tmp)
        if pg is None:
            continue
        dp, dg = pg[0] / paper["params_m"] - 1, pg[1] / paper["gflops"] - 1
        if abs(dp) >= envelope or dg >= envelope:
            continue
        if dg <= -envelope and not outside:
            continue
        rows.append({"s3": s3, "s4": s4, "cfg": cfg, "params": pg[0], "gflops": pg[1],
                     "dp": dp, "dg": dg, "inside": dg > -envelope})
    return rows


def export(cfg: dict, name: str, tmp: Path) -> Tuple[object, Path]:
    """The deployed layout (named after its file, as tools/benchmark.py names configs) and its ONNX file."""
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    model = build_ours(str(path))
    onnx_path = model.export(tmp / f"{name}.onnx", SIZE, 1)
    return model, onnx_path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envelope", type=float, default=0.03, help="relative distance to the paper's params and FLOPs")
    ap.add_argument("--no-outside", dest="outside", action="store_false",
                    help="time only the layouts inside the envelope (default: also those with fewer FLOPs)")
    ap.add_argument("--show-outside", type=int, default=12,
                    help="print the N fastest layouts outside the envelope (all are timed)")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--block", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    base = yaml.safe_load(CONFIG.read_text())
    paper = base["model"]["paper"]
    set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        rows = sweep(base, paper, args.envelope, args.outside, tmp)
        plain, plain_onnx = export(yaml.safe_load(BASE.read_text()), "peleenet", tmp)
        shipped, shipped_onnx = export(base, "shipped", tmp)
        fixed = {"peleenet": make_runner("onnxruntime", plain, plain_onnx, SIZE, 1, args.threads),
                 "shipped": make_runner("onnxruntime", shipped, shipped_onnx, SIZE, 1, args.threads)}
        ship = shipped_key(base)
        for i, row in enumerate(rows):
            model, onnx_path = export(row["cfg"], f"layout{i}", tmp)
            runners = dict(fixed, layout=make_runner("onnxruntime", model, onnx_path, SIZE, 1, args.threads))
            t = time_blocks(runners, args.rounds, args.block, 5, f"{i + 1}/{len(rows)} {label(row['s3'], row['s4'])}")
            row.update(vs_plain=ratio(t, "layout", "peleenet"), vs_shipped=ratio(t, "layout", "shipped"),
                       shipped_vs_plain=ratio(t, "shipped", "peleenet"),
                       shipped=(row["s3"], row["s4"]) == ship)
            del runners  # this layout's session

    print("# = python benchmarks/csppeleenet_layouts.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    print(f"# {machine_line(args.threads)}")
    print(f"# {load_line()}; ONNX Runtime fp32, batch 1, {SIZE}x{SIZE}, deployed graphs; "
          f"{args.rounds} rounds x {args.block} runs per model, peleenet / shipped / layout alternating")
    print(f"# paper: {paper['params_m']} M params, {paper['gflops']} GFLOPs; envelope {100 * args.envelope:.0f}%")
    print()
    print("| stage 3 / stage 4 | params M (vs paper) | GFLOPs (vs paper) | in envelope | / peleenet | / shipped layout |")
    print("|---|---|---|---|---|---|")
    ranked = sorted(rows, key=lambda r: r["vs_plain"][0])
    outside = [r for r in ranked if not r["inside"]]
    fastest_outside = {id(r) for r in outside[:args.show_outside]}
    shown = [r for r in ranked if r["inside"] or id(r) in fastest_outside]
    for row in shown:
        name = label(row["s3"], row["s4"]) + (" (shipped)" if row["shipped"] else "")
        print(f"| {name} | {row['params']:.3f} ({100 * row['dp']:+.1f}%) | {row['gflops']:.3f} ({100 * row['dg']:+.1f}%) "
              f"| {'yes' if row['inside'] else 'no'} | {fmt_ratio(row['vs_plain'], 3)} | {fmt_ratio(row['vs_shipped'], 3)} |")
    sv = [r["shipped_vs_plain"][0] for r in rows]
    print()
    if len(outside) > args.show_outside:
        print(f"({len(outside) - args.show_outside} slower layouts outside the envelope not shown; "
              f"{len(rows)} timed in all)")
    print(f"shipped layout / peleenet over the {len(sv)} trios: median {statistics.median(sv):.3f}x, "
          f"min {min(sv):.3f}x, max {max(sv):.3f}x")
    if len(rows) > 2:
        import numpy as np
        g = np.array([r["gflops"] for r in rows])
        t = np.array([r["vs_shipped"][0] for r in rows])
        print(f"latency vs FLOPs over all {len(rows)} layouts: correlation {np.corrcoef(g, t)[0, 1]:.2f}, "
              f"{np.polyfit(g / g.mean(), t / t.mean(), 1)[0]:.2f}% of latency per 1% of FLOPs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
