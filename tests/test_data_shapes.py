"""Synthetic shapes data: deterministic, boxes tight on the drawn shapes, generated on first use."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from detector.data import build_dataset, load_data_config
from detector.data.shapes import CLASSES, _bbox, draw_shape, make_shapes, shape_points

from conftest import DATA_CONFIGS


def test_make_shapes_is_deterministic_and_valid_coco(tmp_path):
    a = make_shapes(tmp_path / "a", num_train=5, num_val=3, img_size=160, seed=7, progress=False)
    b = make_shapes(tmp_path / "b", num_train=5, num_val=3, img_size=160, seed=7, progress=False)
    c = make_shapes(tmp_path / "c", num_train=5, num_val=3, img_size=160, seed=8, progress=False)
    for split, n in (("train", 5), ("val", 3)):
        ja = json.loads((a / "annotations" / f"instances_{split}.json").read_text())
        jb = json.loads((b / "annotations" / f"instances_{split}.json").read_text())
        assert ja["images"] == jb["images"] and ja["annotations"] == jb["annotations"]
        assert len(ja["images"]) == n and [x["name"] for x in ja["categories"]] == list(CLASSES)
        for im in ja["images"]:
            pa = (a / "images" / split / im["file_name"]).read_bytes()
            assert pa == (b / "images" / split / im["file_name"]).read_bytes()
        for ann in ja["annotations"]:
            x, y, w, h = ann["bbox"]
            im = ja["images"][ann["image_id"] - 1]
            assert x >= 0 and y >= 0 and x + w <= im["width"] and y + h <= im["height"]
            assert 0.8 * 20 / 2 <= max(w, h) <= 130 / 2  # 20-120 px at 320 -> 10-60 at 160
    jc = json.loads((c / "annotations" / "instances_train.json").read_text())
    assert jc["annotations"] != json.loads((a / "annotations" / "instances_train.json").read_text())["annotations"]


@pytest.mark.parametrize("cls", range(len(CLASSES)))
def test_shape_box_is_tight_on_its_pixels(cls):
    img = np.zeros((200, 200, 3), np.uint8)
    pts = shape_points(CLASSES[cls], 100.3, 97.6, 80, 1.1 if cls else 1.0, 13.0)
    x1, y1, x2, y2 = _bbox(pts, 200, 200)
    draw_shape(img, pts, (255, 255, 255))
    ys, xs = np.nonzero(img.max(-1) > 127)  # pixels at least half covered
    # pixel i covers [i, i + 1]
    assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1
    assert abs(ys.min() - y1) <= 1 and abs(ys.max() + 1 - y2) <= 1


def test_shapes_yaml_generates_on_first_use_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CSPDET_CACHE_DIR", str(tmp_path / "cache"))
    d = yaml.safe_load((DATA_CONFIGS / "shapes.yaml").read_text())
    d["generate"].update(num_train=4, num_val=2, img_size=96)
    cfg = load_data_config(d, base_dir=DATA_CONFIGS)
    root = Path(cfg.root)
    assert root.parent == tmp_path / "cache" and root.name.startswith("shapes-")
    assert not root.exists()
    ds = build_dataset(cfg, "val", 96)
    assert len(ds) == 2 and ds.names == list(CLASSES) and (root / "DONE").is_file()
    stamp = (root / "annotations" / "instances_train.json").stat().st_mtime_ns
    train = build_dataset(d, "train", 96)  # second use: no regeneration
    assert len(train) == 4
    assert (root / "annotations" / "instances_train.json").stat().st_mtime_ns == stamp
    # other parameters -> another folder
    d["generate"]["seed"] = 1
    assert load_data_config(d).root != cfg.root
    # an explicit cache_dir wins
    d["generate"]["cache_dir"] = str(tmp_path / "mine")
    assert Path(load_data_config(d).root).parent == tmp_path / "mine"
