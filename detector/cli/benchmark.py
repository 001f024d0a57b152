#!/usr/bin/env python
"""Speed of our detectors beside modern peers, and the CSPNet paper's claims on our models.

    python tools/benchmark.py                                   # full run, writes benchmarks/RESULTS.md
    python tools/benchmark.py --quick                           # fewer iterations
    python tools/benchmark.py --configs configs/csppelee_efm_sam.yaml --sizes 320 --no-peers --pairs none

For every model and input size: parameters, GFLOPs (torch.utils.flop_counter, multiply-add =
2), peak activation memory (PyTorch), latency at batch 1 (median after warm-up) and throughput
at batch ``--throughput-batch`` in PyTorch, ONNX Runtime, OpenVINO (with the openvino extra)
and OpenCV DNN, all with ``--threads`` threads; the table says which engine runs each model
fastest. Within an engine the models are timed alternately, round after round, so that load
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
The INT8 columns are ONNX Runtime on the statically quantized file (:mod:`detector.export.quantize`)
and OpenVINO on NNCF's INT8 IR (:mod:`detector.export.openvino_export`), both calibrated on
random inputs here: speed does not depend on the ranges. OpenVINO keeps its default precision
hint (bf16 on CPUs with AMX or AVX-512 BF16), as a user running it gets.

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
import json
import shlex
import sys
from pathlib import Path

from ..benchmark.models import PEERS
from ..benchmark.runner import ENGINES, available_engines, openvino_available

ROOT = Path.cwd()  # outputs go under the folder the command runs in
DEFAULT_CONFIGS = ["configs/csppelee_efm_sam.yaml", "configs/pelee_efm_sam.yaml", "configs/csppelee_gfm.yaml"]
DEFAULT_PAIRS = ["peleenet:csppeleenet", "resnet10:cspresnet10", "resnet50:cspresnet50",
                 "resnext50:cspresnext50", "darknet53:cspdarknet53",
                 "configs/pelee_efm_sam.yaml:configs/csppelee_efm_sam.yaml"]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="*", default=DEFAULT_CONFIGS, help="our detector configs")
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 416, 512], help="input sizes")
    ap.add_argument("--engines", nargs="+", default=None, choices=ENGINES,
                    help="default: every engine installed (openvino needs pip install 'cspdet[openvino]')")
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
                    help="print ONNX Runtime's per-op profile (reorder / pooling share) of every model, "
                         "and OpenVINO's (PERF_COUNT: time per layer type and kernel) when it is timed")
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
    if args.engines is None:
        args.engines = available_engines()
        if "openvino" not in args.engines:
            print("note: OpenVINO is not installed, its columns are left out (pip install 'cspdet[openvino]')")
    elif "openvino" in args.engines and not openvino_available():
        ap.error("--engines openvino needs OpenVINO and NNCF: pip install 'cspdet[openvino]'")
    return args


def main(argv=None) -> int:
    from ..benchmark.machine import load_line
    from ..benchmark.models import collect_models, peers_available
    from ..benchmark.report import Run, RunSettings, markdown, write_section
    from ..benchmark.run import benchmark, profile_files
    from ..benchmark.timing import set_threads
    from ..config import ConfigError

    args = parse_args(argv)
    args.load_before = load_line()
    if not set_threads(args.threads):
        print("note: ONNX Runtime's thread pool was set up before; sessions keep their own threads")
    bad = [item for item in args.pairs if ":" not in item]
    if bad:
        print(f"error: --pairs takes base:csp items, got '{bad[0]}'", file=sys.stderr)
        return 2
    if args.peers and not peers_available():
        print("ultralytics is not installed: peers skipped (pip install ultralytics)")
        args.peers = []
    try:
        found = collect_models(args.configs, args.peers, [item.split(":", 1) for item in args.pairs],
                               args.sizes, args.backbone_size, args.deploy)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in found.skipped:
        print(note)
    models = list(found.models.values())
    results, rounds_of, files = benchmark(models, found.sizes_of, args.engines, args.threads, args.iters,
                                          args.warmup, args.throughput_batch, Path(args.cache), args.block,
                                          args.int8)
    profiles = profile_files(models, found.sizes_of, files, args.threads, args.engines) if args.profile else {}
    run = Run(models, found.sizes_of, results, rounds_of, found.pairs, profiles)
    settings = RunSettings(args.engines, args.sizes, args.threads, args.iters, args.block, args.warmup,
                           args.throughput_batch, args.int8, args.deploy, args.load_before,
                           _command(argv), args.shared_note)
    section = markdown(run, settings)
    write_section(Path(args.output), section)
    print(section)
    _write_json(Path(args.json), args, run)
    print(f"written: {args.output} (between the benchmark markers), {args.json}")
    return 0


def _command(argv) -> str:
    """The command as typed, the free-text note left out (it is printed below it)."""
    shown = list(argv if argv is not None else sys.argv[1:])
    for i, a in enumerate(shown[:-1]):
        if a == "--shared-note":
            shown[i + 1] = "<the note below>"
    return shlex.join(["python", "tools/benchmark.py", *shown])


def _write_json(path: Path, args, run) -> None:
    raw = {"args": vars(args),
           "results": [{"model": k[0], "size": k[1], "engine": k[2], "batch": k[3], **v}
                       for k, v in run.results.items()],
           "rounds_ms": [{"model": k[0], "size": k[1], "engine": k[2], "batch": k[3],
                          "ms": [1000 * t for t in v]} for k, v in run.rounds_of.items()],
           "profiles": [{"model": k[0], "size": k[1], "kind": k[2], "ops": v} for k, v in run.profiles.items()],
           "stats": {m.name: m.stats for m in run.models}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
