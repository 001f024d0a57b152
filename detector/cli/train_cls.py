"""Train a backbone as an image classifier on an ImageFolder tree (``cspdet train-cls``).

    cspdet train-cls --cfg configs/classify/quickstart.yaml             # synthetic data, minutes on a CPU
    cspdet train-cls --cfg configs/backbones/cspresnet10.yaml --data /data/imagenet
    cspdet train-cls --cfg cspdarknet53 --data /data/imagenet train.epochs=120 train.augment.mixup=0.2
    cspdet train-cls --resume runs/cls/last.pt
    torchrun --nproc_per_node 2 tools/train_cls.py --cfg cspresnet10 --data /data/imagenet

``--data`` is a folder with ``train/<class>/`` and ``val/<class>/`` image folders, or
``synthetic`` (the quick-start data, generated on first use). Overrides are ``section.key=value``;
the run goes to ``runs/<train.name>/`` (docs/classification.md).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

# idle OpenMP threads sleep instead of spinning (see detector/cli/train.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="cspdet train-cls", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", help="backbone config (configs/backbones/*.yaml or its name) or a "
                                 "classification config (configs/classify/*.yaml)")
    p.add_argument("--data", help="ImageFolder root (train/<class>/, val/<class>/) or 'synthetic'")
    p.add_argument("--resume", help="last.pt of an interrupted run: continue it in its folder")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars (log lines only)")
    p.add_argument("overrides", nargs="*", help="config overrides such as train.epochs=50")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from detector.classification.trainer import ClsTrainer, NonFiniteLossError, StopRequested
    from detector.common import PathNotFoundError
    from detector.config import ConfigError
    from detector.engine.checkpoint import CheckpointError
    if not args.cfg and not args.resume:
        print("error: give --cfg CONFIG (and --data FOLDER), or --resume runs/NAME/last.pt",
              file=sys.stderr)
        return 2
    if args.resume and (args.cfg or args.data):
        logging.getLogger("cspdet.train").warning(
            "--resume given: the config and data stored in %s are used", args.resume)
    try:
        trainer = ClsTrainer(None if args.resume else args.cfg, overrides=args.overrides,
                             data=None if args.resume else args.data, resume=args.resume,
                             progress=not args.no_progress)
        result = trainer.train()
    except (ConfigError, CheckpointError, PathNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except StopRequested as e:
        print(f"{e}; resume with --resume {e.checkpoint}", file=sys.stderr)
        return 130
    if rank == 0:
        m = result["metrics"]
        summary = " | ".join(f"{k} {m[k]:.2f}%" for k in ("top1", "top5") if k in m)
        print(f"done: {result['run_dir']}  {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
