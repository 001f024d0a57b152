#!/usr/bin/env python
"""Same as `cspdet convert` (detector/cli/convert.py); runs from a checkout without installing."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.cli import run_command  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_command("convert"))
