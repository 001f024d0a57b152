"""Runs tests/test_openvino.py in a pytest process of its own (conftest.py says why)."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_openvino_tests_pass_in_their_own_process():
    env = dict(os.environ, CSPDET_TEST_CHILD="openvino")
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_openvino.py"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout  # it ran (without the extra its tests skip, and say why)
