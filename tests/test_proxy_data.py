"""The proxy ablation set: deterministic by seed, valid labels on visible pixels, generated on
first use, quick to make, and harder than the shapes (more, smaller, crowded objects)."""
import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from detector.config import ConfigError
from detector.data import build_dataset, load_data_config
from detector.data.config import GenerateConfig, shapes_params_hash
from detector.data.proxy import CLASSES, MIN_VISIBLE, draw_image, load_photos, make_proxy, resolve_textures

from conftest import COCO128, DATA_CONFIGS


def _read(root, split):
    return json.loads((Path(root) / "annotations" / f"instances_{split}.json").read_text())


@pytest.mark.parametrize("textures", ["auto", "none"])
def test_same_seed_same_files_and_labels(tmp_path, textures):
    kw = dict(num_train=6, num_val=3, img_size=128, textures=textures, progress=False)
    a = make_proxy(tmp_path / "a", seed=5, **kw)
    b = make_proxy(tmp_path / "b", seed=5, **kw)
    c = make_proxy(tmp_path / "c", seed=6, **kw)
    for split in ("train", "val"):
        ja, jb = _read(a, split), _read(b, split)
        assert ja == jb
        for im in ja["images"]:
            assert ((a / "images" / split / im["file_name"]).read_bytes()
                    == (b / "images" / split / im["file_name"]).read_bytes())
    assert _read(c, "train")["annotations"] != _read(a, "train")["annotations"]
    # val does not depend on the number of training images
    d = make_proxy(tmp_path / "d", seed=5, **{**kw, "num_train": 2})
    assert _read(d, "val") == _read(a, "val")
    readme = (a / "README.txt").read_text()
    if textures == "none":
        assert "procedural" in readme and _read(a, "train")["info"]["textures"] == "procedural"


def test_labels_are_valid_coco_and_the_set_is_crowded(tmp_path):
    root = make_proxy(tmp_path / "p", num_train=30, num_val=2, img_size=160, seed=0,
                      textures="none", progress=False)
    j = _read(root, "train")
    assert [c["name"] for c in j["categories"]] == list(CLASSES)
    sizes = {im["id"]: (im["width"], im["height"]) for im in j["images"]}
    per_image = np.bincount([a["image_id"] for a in j["annotations"]], minlength=31)[1:]
    for ann in j["annotations"]:
        x, y, w, h = ann["bbox"]
        iw, ih = sizes[ann["image_id"]]
        assert 1 <= ann["category_id"] <= len(CLASSES)
        assert x >= 0 and y >= 0 and w >= 3 and h >= 3 and x + w <= iw and y + h <= ih
        assert ann["area"] == pytest.approx(w * h)
    assert len({a["id"] for a in j["annotations"]}) == len(j["annotations"])
    assert per_image.mean() > 6            # crowded (shapes: 1-8, mean about 4)
    side = np.array([max(a["bbox"][2], a["bbox"][3]) for a in j["annotations"]])
    assert np.median(side) < 0.15 * 160     # mostly small objects
    assert len({a["category_id"] for a in j["annotations"]}) == len(CLASSES)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_box_is_tight_on_the_visible_pixels_and_hidden_objects_are_not_labelled(seed):
    rng = np.random.default_rng(seed)
    img, objects, ids, drawn = draw_image(rng, 192, [], return_ids=True)
    assert img.dtype == np.uint8 and img.shape[:2] == ids.shape and objects
    labelled = iter(objects)
    for obj_id, cls, area in drawn:
        ys, xs = np.nonzero(ids == obj_id)
        if len(xs) < MIN_VISIBLE * area:  # mostly hidden (by later objects or occluders)
            continue
        got_cls, box = next(labelled)
        assert got_cls == cls
        assert box == (xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0)
    assert next(labelled, None) is None
    # occlusion happens: some objects lose pixels to later ones or to occluder patches
    assert any(np.count_nonzero(ids == i) < a for i, _, a in drawn)


def test_photo_textures_are_used_when_found_and_change_the_cache_key(tmp_path):
    if not COCO128.is_dir():
        pytest.skip("coco128 photos not found")
    folder, photos = resolve_textures(str(COCO128 / "images"))
    assert folder is not None and len(photos) > 10
    assert load_photos(photos[:2], 64)[0].shape[0] == 64 or load_photos(photos[:2], 64)[0].shape[1] == 64
    with_photos = shapes_params_hash(GenerateConfig(kind="proxy", textures=str(COCO128 / "images")))
    procedural = shapes_params_hash(GenerateConfig(kind="proxy", textures="none"))
    assert with_photos != procedural
    root = make_proxy(tmp_path / "p", num_train=2, num_val=1, img_size=96, seed=0,
                      textures=str(COCO128 / "images"), progress=False)
    assert "crops of" in (root / "README.txt").read_text()
    assert _read(root, "train")["info"]["textures"].startswith("photos-")


def test_bad_generate_options_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="kind"):
        GenerateConfig(kind="proxxy")
    with pytest.raises(ConfigError, match="textures"):
        shapes_params_hash(GenerateConfig(kind="proxy", textures=str(tmp_path / "nothing")))


def test_proxy_yaml_generates_on_first_use_quickly(tmp_path, monkeypatch):
    monkeypatch.setenv("CSPDET_CACHE_DIR", str(tmp_path / "cache"))
    d = yaml.safe_load((DATA_CONFIGS / "proxy.yaml").read_text())
    assert d["names"] == list(CLASSES)
    d["generate"].update(num_train=20, num_val=4, img_size=160)
    cfg = load_data_config(d, base_dir=DATA_CONFIGS)
    root = Path(cfg.root)
    assert root.parent == tmp_path / "cache" and root.name.startswith("proxy-") and not root.exists()
    t0 = time.perf_counter()
    ds = build_dataset(cfg, "train", 160)
    assert time.perf_counter() - t0 < 20  # ~15 ms an image; generous for a loaded machine
    assert len(ds) == 20 and ds.names == list(CLASSES) and (root / "DONE").is_file()
    stamp = (root / "annotations" / "instances_train.json").stat().st_mtime_ns
    assert len(build_dataset(d, "val", 160)) == 4
    assert (root / "annotations" / "instances_train.json").stat().st_mtime_ns == stamp
    # the shapes default is untouched by the new options: its cache folder name is stable
    assert shapes_params_hash(GenerateConfig()) == "b0482388e2"
