"""Configs that start from another (``base:``) and anchors fitted to the data (``auto``): the
small-data recipe is one switch on top of the flagship."""
import copy

import pytest
import torch

from detector.config import ConfigError, load_config
from detector.engine.trainer import Trainer
from detector.models.builder import build_model

from conftest import tiny_config


def test_recipe_lays_its_sections_over_its_base():
    flagship = load_config("csppelee_efm_sam")
    recipe = load_config("csppelee_small_data")
    assert recipe["model"]["head"]["anchors"] == "auto"
    assert recipe["model"]["head"]["width"] == flagship["model"]["head"]["width"]     # merged, not replaced
    assert recipe["model"]["neck"] == flagship["model"]["neck"]
    assert recipe["train"]["img_size"] == 416 and recipe["train"]["batch_size"] == flagship["train"]["batch_size"]
    assert "base" not in recipe and recipe["_source"].endswith("csppelee_small_data.yaml")


def test_base_errors_name_the_problem(tmp_path):
    loop = tmp_path / "a.yaml"
    loop.write_text("base: a.yaml\ntrain: {epochs: 1}\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(loop)
    missing = tmp_path / "b.yaml"
    missing.write_text("base: no_such_config\n")
    with pytest.raises(ConfigError, match="no_such_config"):
        load_config(missing)


def test_auto_anchors_cannot_build_a_model_outside_training():
    cfg = load_config("csppelee_small_data")
    with pytest.raises(ConfigError, match="anchors 'auto'"):
        build_model(cfg)


def test_auto_anchors_are_fitted_to_the_training_boxes_and_stored(tmp_path, tiny_data):
    cfg = copy.deepcopy(tiny_config(tiny_data, tmp_path, epochs=1))
    cfg["model"]["head"]["anchors"] = "auto"
    result = Trainer(cfg, progress=False).train()
    ckpt = torch.load(f"{result['run_dir']}/last.pt", weights_only=True)
    anchors = ckpt["config"]["model"]["head"]["anchors"]
    levels = len(ckpt["config"]["model"]["head"]["strides"])
    assert len(anchors) == levels and all(len(a) == 6 for a in anchors)
    flat = [v for a in anchors for v in a]
    assert all(isinstance(v, int) and v >= 1 for v in flat)
    areas = [a[i] * a[i + 1] for a in anchors for i in range(0, 6, 2)]
    assert areas == sorted(areas)                           # smallest at the finest stride
    # the tiny set's boxes are 8-40 px at its size: the fitted anchors are of that size,
    # far from the COCO anchors' 10-373 px
    assert max(flat) < 100
