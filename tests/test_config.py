"""Config loading: overrides and strict keys are what users meet first when they make a typo."""
from dataclasses import dataclass, field
from typing import Tuple

import pytest

from detector.config import ConfigError, apply_overrides, from_dict, load_config, save_config


@dataclass
class Inner:
    channels: int = 64
    act: str = "relu"


@dataclass
class Outer:
    epochs: int = 10
    lr: float = 0.01
    sizes: Tuple[int, ...] = (320,)
    inner: Inner = field(default_factory=Inner)


def test_unknown_key_names_key_and_suggests_closest():
    with pytest.raises(ConfigError) as e:
        from_dict(Outer, {"inner": {"chanels": 32}}, "model.neck")
    msg = str(e.value)
    assert "model.neck.inner.chanels" in msg
    assert "did you mean 'channels'" in msg


def test_nested_dataclass_and_tuple_conversion():
    cfg = from_dict(Outer, {"epochs": 3, "sizes": [256, 320], "inner": {"act": "silu"}})
    assert cfg.epochs == 3 and cfg.sizes == (256, 320)
    assert cfg.inner == Inner(channels=64, act="silu")


def test_overrides_parse_yaml_values():
    cfg = apply_overrides({"train": {"epochs": 1, "lr": 0.1}}, ["train.epochs=50", "train.lr=1e-3",
                                                               "data=configs/data/coco128.yaml"])
    assert cfg["train"]["epochs"] == 50
    assert cfg["train"]["lr"] == pytest.approx(1e-3)
    assert cfg["data"] == "configs/data/coco128.yaml"


def test_override_into_missing_section_is_an_error():
    with pytest.raises(ConfigError, match="trian"):
        apply_overrides({"train": {}}, ["trian.epochs=3"])
    with pytest.raises(ConfigError, match="key.subkey=value"):
        apply_overrides({}, ["train.epochs"])


def test_load_and_save_roundtrip(tmp_path):
    path = tmp_path / "c.yaml"
    save_config({"train": {"epochs": 2, "sizes": (1, 2)}}, path)
    cfg = load_config(path, ["train.epochs=5"])
    assert cfg["train"] == {"epochs": 5, "sizes": [1, 2]}
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_numbers_written_as_text_in_yaml_are_read_as_numbers():
    cfg = from_dict(Outer, {"lr": "1e-3", "epochs": 2})
    assert cfg.lr == pytest.approx(1e-3)
    with pytest.raises(ConfigError, match="outer.lr"):
        from_dict(Outer, {"lr": "fast"}, "outer")
    with pytest.raises(ConfigError, match="integer"):
        from_dict(Outer, {"epochs": "many"})


def test_override_inside_a_section_given_as_yaml_path(tmp_path):
    data = tmp_path / "data.yaml"
    data.write_text("root: images\nnames: [a, b]\n")
    cfg = apply_overrides({"data": str(data)}, ["data.root=/elsewhere"])
    assert cfg["data"] == {"root": "/elsewhere", "names": ["a", "b"], "_source": str(data)}
    assert "root: images" in data.read_text()  # the file itself is untouched
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"train": {"epochs": 3}}, ["train.epochs.max=3"])


def test_overrides_reach_list_items_and_mappings():
    """One mechanism for the command line and the ablation files: ``*`` and indices into lists,
    a mapping of already-typed values, a value replacing a whole section."""
    cfg = {"model": {"stages": [{"fusion": "both"}, {"fusion": "both"}], "neck": {"type": "efm", "maxout": True}}}
    apply_overrides(cfg, ["model.stages.*.fusion=last", "model.stages.1.depth=2"])
    assert cfg["model"]["stages"] == [{"fusion": "last"}, {"fusion": "last", "depth": 2}]
    apply_overrides(cfg, {"model.neck": {"type": "panet"}, "model.stages.0.fusion": "first"})
    assert cfg["model"]["neck"] == {"type": "panet"} and cfg["model"]["stages"][0]["fusion"] == "first"
    with pytest.raises(ConfigError, match="'x' is not an index of the list at 'model.stages'"):
        apply_overrides(cfg, ["model.stages.x.fusion=last"])
    with pytest.raises(ConfigError, match="'\\*' needs a list at 'model.neck'"):
        apply_overrides(cfg, ["model.neck.*.a=1"])
    with pytest.raises(ConfigError, match="no section 'model.nekc' \\(did you mean 'neck'\\?\\)"):
        apply_overrides(cfg, {"model.nekc.type": "efm"})
