"""`pip install .` as a user does it: a wheel, installed outside the repository, runs `cspdet`.

The wheel must carry the configs (names such as ``csppelee_efm_sam`` and ``arch: csppeleenet``
presets resolve from the installed package) and the ``cspdet`` console command.
"""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The repository's editable install puts a finder on sys.meta_path that maps `detector` to the
# checkout; drop it so that the subprocess imports the wheel's copy from --target only.
BOOT = ("import sys; sys.meta_path = [f for f in sys.meta_path "
        "if not type(f).__module__.startswith('__editable__')]; "
        "import detector, detector.cli; "
        "assert detector.__file__.startswith(sys.argv[1]), detector.__file__; "
        "sys.exit(detector.cli.main(sys.argv[2:]))")


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "detector", src / "detector", ignore=ignore)
    shutil.copytree(REPO / "configs", src / "configs", ignore=ignore)
    out = tmp / "dist"
    base = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)]
    # Without build isolation the venv's setuptools builds it offline; a venv without a recent
    # setuptools falls back to pip's isolated build (which fetches setuptools from the index).
    res = subprocess.run(base + ["--no-build-isolation"], capture_output=True, text=True)
    if res.returncode != 0:
        res = subprocess.run(base, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    wheels = list(out.glob("cspdet-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = _build_wheel(tmp)
    target = tmp / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                          str(target), str(wheel)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    return wheel, target


def _cspdet(target: Path, cwd: Path, *args):
    env = dict(os.environ, PYTHONPATH=str(target))
    return subprocess.run([sys.executable, "-c", BOOT, str(target), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_wheel_carries_configs_and_console_command(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "cspdet = detector.cli:main" in z.read(entry_points).decode()
    shipped = {Path(n).relative_to("detector/configs").as_posix() for n in names
               if n.startswith("detector/configs/") and n.endswith(".yaml")}
    in_git = {p.relative_to(REPO / "configs").as_posix() for p in (REPO / "configs").rglob("*.yaml")}
    assert shipped == in_git


def test_installed_cspdet_runs_outside_the_repository(installed, tmp_path):
    _, target = installed
    res = _cspdet(target, tmp_path, "model-info", "--cfg", "csppelee_efm_sam", "--size", "320")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "GFLOPs" in res.stdout or "GFLOP" in res.stdout, res.stdout
    # a backbone preset by name, then an export of a config by name, both from a foreign folder
    res = _cspdet(target, tmp_path, "model-info", "--cfg", "cspdarknet53", "--size", "224")
    assert res.returncode == 0, res.stdout + res.stderr
    res = _cspdet(target, tmp_path, "export", "--weights", "csppelee_efm_sam.yaml", "--size", "64",
                  "--output", str(tmp_path / "m.onnx"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "m.onnx").is_file()
    # a typo in a config name is one clear line, not a traceback
    res = _cspdet(target, tmp_path, "model-info", "--cfg", "csppele_efm_sam")
    assert res.returncode != 0
    assert "did you mean 'csppelee_efm_sam'" in res.stderr and "Traceback" not in res.stderr


def test_installed_int8_export_outside_the_repository(installed, tmp_path):
    """`cspdet export --int8 --data X` from the wheel: calibration images from a user's data
    YAML, ORT's quantizer (with the shared concat ranges) and the metadata, no checkout."""
    import cv2
    import numpy as np

    _, target = installed
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(tmp_path / "images" / split / f"{i}.jpg"), rng.integers(0, 255, (70, 90, 3), dtype=np.uint8))
            (tmp_path / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.3 0.3\n")
    data = tmp_path / "mine.yaml"
    data.write_text(f"format: yolo\nroot: {tmp_path}\ntrain: images/train\nval: images/val\nnames: [a]\n")
    res = _cspdet(target, tmp_path, "export", "--weights", "csppelee_efm_sam.yaml", "--size", "64",
                  "--output", str(tmp_path / "m.onnx"), "--int8", "--data", str(data), "--calib-images", "3")
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "m_int8.onnx").is_file() and "INT8 static QDQ" in res.stdout, res.stdout
