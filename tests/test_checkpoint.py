"""Checkpoints must survive crashes mid-write and refuse weights of another model clearly."""
import pickle

import pytest
import torch
from torch import nn

from detector.engine.checkpoint import (CheckpointError, load_checkpoint, load_state_strict,
                                        model_state, save_checkpoint)


class Foo:
    """A class: weights_only loading must refuse pickled objects like it."""


def test_roundtrip_with_weights_only(tmp_path):
    model = nn.Linear(3, 2)
    path = save_checkpoint({"model": model.state_dict(), "config": {"model": {"a": (1, 2)}},
                            "epoch": 3}, tmp_path / "x.pt")
    raw = torch.load(path, weights_only=True)  # what a user does by hand
    assert raw["epoch"] == 3 and raw["config"]["model"]["a"] == [1, 2]
    ckpt = load_checkpoint(path)
    other = nn.Linear(3, 2)
    load_state_strict(other, model_state(ckpt))
    assert torch.equal(other.weight, model.weight)
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_ema_weights_preferred(tmp_path):
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    ckpt = load_checkpoint(save_checkpoint({"model": a.state_dict(), "ema": b.state_dict()},
                                           tmp_path / "x.pt"))
    assert torch.equal(model_state(ckpt)["weight"], b.weight)


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = save_checkpoint({"epoch": 1}, tmp_path / "last.pt")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert list(tmp_path.iterdir()) == [path]


def test_other_architecture_is_a_clear_error(tmp_path):
    ckpt = load_checkpoint(save_checkpoint({"model": nn.Linear(3, 4).state_dict()}, tmp_path / "x.pt"))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_state_strict(nn.Linear(3, 2), model_state(ckpt))
    with pytest.raises(CheckpointError, match="missing keys"):
        load_state_strict(nn.Sequential(nn.Linear(3, 4)), model_state(ckpt))


def test_bad_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(bad)
    pickled = tmp_path / "pickled.pt"
    with open(pickled, "wb") as f:
        pickle.dump({"obj": Foo}, f)
    with pytest.raises(CheckpointError):
        load_checkpoint(pickled)
