#!/usr/bin/env python
"""Same as `cspdet eval-cls` (detector/cli/eval_cls.py); runs from a checkout without installing."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.cli import run_command  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_command("eval-cls"))
