"""Pretrain -> detect: a classification checkpoint (the classifier trainer's format) loads as a
detector's ``model.backbone_weights``, its head dropped; another architecture is a clear error."""
from pathlib import Path

import pytest
import torch

from detector import build_model
from detector.config import to_dict
from detector.engine.checkpoint import CheckpointError, save_checkpoint
from detector.models import load_pretrained_backbone

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "configs"


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return model


def save_classifier(cfg_path, path, seed, num_classes=7, ema=True, prefix=""):
    """A classifier checkpoint as the classification trainer writes it."""
    clf = randomize(build_model(cfg_path, [f"model.num_classes={num_classes}"]), seed)
    ema_model = randomize(build_model(cfg_path, [f"model.num_classes={num_classes}"]), seed + 1)
    state = {"model": {prefix + k: v for k, v in clf.state_dict().items()}, "config": {"model": to_dict(clf.config), "train": {}},
             "names": [f"class{i}" for i in range(num_classes)], "epoch": 3}
    if ema:
        state["ema"] = ema_model.state_dict()
    save_checkpoint(state, path)
    return ema_model if ema else clf


def test_classifier_checkpoint_loads_as_a_detector_backbone(tmp_path):
    path = tmp_path / "csppeleenet_cls" / "best.pt"
    src = save_classifier(CFG / "backbones" / "csppeleenet_slim.yaml", path, seed=11)  # the flagship's
    det = build_model(CFG / "csppelee_efm_sam.yaml", [f"model.backbone_weights={path}"])
    assert det.backbone_weights == str(path)
    # what the trainer does at the start of training
    load_pretrained_backbone(det.backbone, det.backbone_weights)
    want = {k: v for k, v in src.state_dict().items() if not k.startswith("head.")}
    got = det.backbone.state_dict()
    assert set(got) == set(want)  # the classifier head is dropped, nothing else
    for k, v in got.items():
        assert torch.equal(v, want[k]), k  # the EMA weights, as for inference
    assert any(k.startswith("head.fc") for k in src.state_dict())


def test_classifier_without_ema_and_ddp_keys(tmp_path):
    path = tmp_path / "cls.pt"
    src = save_classifier(CFG / "backbones" / "csppeleenet_slim.yaml", path, seed=3, ema=False,
                          prefix="module.")  # saved from a DDP-wrapped model
    det = build_model(CFG / "csppelee_efm_sam.yaml")
    load_pretrained_backbone(det.backbone, path)
    assert torch.equal(det.backbone.stem.conv1.conv.weight, src.stem.conv1.conv.weight)


def test_classifier_of_another_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "peleenet_cls.pt"
    save_classifier(CFG / "backbones" / "peleenet_slim.yaml", path, seed=5)
    det = build_model(CFG / "csppelee_efm_sam.yaml", [f"model.backbone_weights={path}"])
    with pytest.raises(CheckpointError, match=r"peleenet_cls.pt \(a 'peleenet_slim' model\) for "
                                              r"backbone 'csppeleenet_slim' does not fit.*another "
                                              r"architecture"):
        load_pretrained_backbone(det.backbone, det.backbone_weights)
