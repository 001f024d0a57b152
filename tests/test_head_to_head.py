"""benchmarks/head_to_head.py on real photos: a few BCCD images (Pascal VOC) at a tiny budget give
the table a user reads: val and test rows per model with the seeds' spread, ours at its last
and best-val epochs, per-class AP50 on test, and no network connection."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("head_to_head", ROOT / "benchmarks" / "head_to_head.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_seeds_budget_and_spread_are_what_the_options_say():
    h2h = _load_script()
    args = h2h.parse_args(["--data", "configs/data/bccd.yaml", "--seeds", "0", "1", "2",
                           "--peer-seeds", "yolov8n=0", "yolo26n=5,6"])
    assert (args.img_size, args.epochs, args.batch) == (320, 30, 8)  # BCCD's 2-core budget
    assert h2h.seeds_of(args) == {"ours": [0, 1, 2], "yolo11n": [0, 1, 2], "yolov8n": [0], "yolo26n": [5, 6]}
    assert h2h.seeds_of(h2h.parse_args(["--seed", "3"]))["ours"] == [3]  # --seed keeps its meaning
    assert h2h.parse_args(["--img-size", "64"]).img_size == 64
    with pytest.raises(SystemExit):
        h2h.parse_args(["--peer-seeds", "yolo99=0"])
    assert h2h.mean_range([0.5, 0.25, 0.75]) == "0.500 (0.250-0.750)" and h2h.mean_range([0.5]) == "0.500"


@pytest.mark.slow
def test_tiny_bccd_table_has_val_and_test_rows_and_per_class_ap50(tmp_path, tiny_bccd):
    data = tmp_path / "photos.yaml"
    data.write_text(yaml.safe_dump(tiny_bccd))
    try:
        import ultralytics  # noqa: F401
        models = ["ours", "yolo11n"]
    except ImportError:
        models = ["ours"]
    out = tmp_path / "h2h"
    env = dict(os.environ, PYTHONPATH=str(ROOT), YOLO_CONFIG_DIR=str(tmp_path / "ultralytics"))
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "head_to_head.py"), "--data", str(data),
                           "--models", *models, "--epochs", "1", "--img-size", "64", "--batch", "4",
                           "--seeds", "0", "1", "--peer-seeds", "yolo11n=0", "--workers", "0",
                           "--threads", "1", "--rounds", "2", "--out", str(out), "--no-progress"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (out / "head_to_head.md").read_text()
    assert "Network connections attempted: 0." in text
    rows = [_cells(line) for line in text.splitlines() if line.startswith("| ours") or line.startswith("| yolo")]
    ours = "ours (csppelee_efm_sam)"
    metric = [r for r in rows if len(r) == 8]  # model, split, seeds, epoch, AP, AP50, AP75, train s
    splits = {(r[0], r[1]) for r in metric}
    assert {(ours, "val"), (ours, "test"), (f"{ours} best val", "val"), (f"{ours} best val", "test")} <= splits
    ours_val = next(r for r in metric if r[:2] == [ours, "val"])
    assert ours_val[2] == "0, 1" and "(" in ours_val[4]  # two seeds: mean (min-max)
    header = _cells(next(line for line in text.splitlines() if line.startswith("| model | RBC")))
    assert header == ["model", "RBC", "WBC", "Platelets"] and "Per-class AP50 on test" in text
    per_class = [r for r in rows if len(r) == 4]
    assert {r[0] for r in per_class} == {ours, *models[1:]}
    assert all(c != "-" for r in per_class for c in r[1:])
    if "yolo11n" in models:
        assert ("yolo11n", "test") in splits
        assert "labels read back and scored as detections give AP val 1.000, test 1.000" in text
    # per-epoch weights no row needs are deleted; the scored ones stay
    assert sorted(p.name for p in (out / "ours-s0" / "epochs").iterdir()) == ["epoch1.pt"]
