"""Train every variant of one of the paper's ablations and write its table.

    cspdet ablate --list
    cspdet ablate maxout --quick                      # a CPU budget, 2 seeds
    cspdet ablate neck --budget full --device cuda    # the full run (GPU)
    cspdet ablate gamma --quick --variants "gamma 0.25,gamma 0.75" train.epochs=5
    cspdet ablate csp --budget bccd                   # real photos (BCCD) on a CPU, 3 seeds
    cspdet ablate maxout --budget bccd --data my_data.yaml --seeds 0 1

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
import logging
import os
import shlex
import sys
from pathlib import Path

from ..ablation import (DEFAULT_SETS, AblationError, load_sets, markdown, pick_budget, pick_set, pick_variants,
                        run_ablation)


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
    p.add_argument("--data", default="", help="data YAML every variant trains on (default: the budget's, "
                                               "else the file's defaults.data)")
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
            also = f" (also: {', '.join(s.aliases)})" if s.aliases else ""
            print(f"{name:<12} {s.title}{also}: " + ", ".join(v.name for v in s.variants))
        if not args.set and not args.list:
            print("cspdet ablate: name a set (above)", file=sys.stderr)
            return 2
        return 0
    aset = pick_set(sets, args.set)
    budget_name = "quick" if args.quick else (args.budget or "full")
    budget = dict(pick_budget(sets, budget_name), **({"data": args.data} if args.data else {}))
    seeds = list(args.seeds or budget.get("seeds") or [0, 1])
    variants = pick_variants(aset, [v.strip() for v in args.variants.split(",") if v.strip()]
                             if args.variants else None)
    overrides = list(args.overrides) + ([f"train.device={args.device}"] if args.device else [])
    for o in overrides:
        if "=" not in o:
            raise AblationError(f"override '{o}' must look like key.subkey=value")
    save_dir = Path(args.save_dir) / aset.name
    save_dir.mkdir(parents=True, exist_ok=True)
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    run = run_ablation(sets, aset, variants, budget, seeds, overrides, save_dir, threads, args.ort_iters,
                       progress=not args.no_progress)
    command = "cspdet ablate " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    text = markdown(aset, run, budget_name, budget, seeds, command, threads)
    out = Path(args.output) if args.output else save_dir / "ablation.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    print(f"written to {out}")
    return 0 if run.any_finished else 1


if __name__ == "__main__":
    sys.exit(main())
