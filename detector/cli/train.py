#!/usr/bin/env python
"""Train a detector.

    python tools/train.py --cfg configs/csppelee_efm_sam.yaml
    python tools/train.py --cfg configs/csppelee_efm_sam.yaml train.epochs=50 data=configs/data/coco128.yaml
    python tools/train.py --resume runs/csppelee_efm_sam/last.pt
    torchrun --nproc_per_node 2 tools/train.py --cfg configs/csppelee_efm_sam.yaml train.batch_size=32

Overrides are ``section.key=value`` (YAML values). The run goes to ``runs/<train.name>/``;
see docs/training.md.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

# Idle OpenMP threads sleep instead of spinning (``cspdet`` and tools/train.py set this before
# torch loads; this line covers ``python -m detector.cli.train``). With spinning threads, two torch
# threads on two cores that anything else also uses ran a training step 20x slower
# (benchmarks/RESULTS.md); with PASSIVE they beat one thread. Set it to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from detector.config import ConfigError  # noqa: E402
from detector.engine.checkpoint import CheckpointError  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", help="training config YAML (model, data, train, eval sections)")
    p.add_argument("--resume", help="last.pt of an interrupted run: continue it in its folder")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars (log lines only)")
    p.add_argument("overrides", nargs="*", help="config overrides such as train.epochs=50")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from detector.engine.trainer import NonFiniteLossError, StopRequested, Trainer
    if not args.cfg and not args.resume:
        print("error: give --cfg CONFIG (or --resume runs/NAME/last.pt)", file=sys.stderr)
        return 2
    if args.cfg and args.resume:
        logging.getLogger("cspdet.train").warning(
            "--resume given: the config stored in %s is used, --cfg %s is ignored", args.resume, args.cfg)
    try:
        trainer = Trainer(args.cfg, overrides=args.overrides, resume=args.resume,
                          progress=not args.no_progress)
        result = trainer.train()
    except (ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except StopRequested as e:
        print(f"{e}; resume with --resume {e.checkpoint}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # a second Ctrl-C / SIGTERM while last.pt was being prepared
        print("interrupted; the last complete checkpoint is the run folder's last.pt", file=sys.stderr)
        return 130
    if rank == 0:
        m = result["metrics"]
        summary = " | ".join(f"{k} {m[k]:.4f}" for k in ("AP", "AP50", "AP75") if k in m)
        print(f"done: {result['run_dir']}  {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
