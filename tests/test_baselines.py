"""Faithful baselines: the darknet-layout detectors' parameter counts against the authors' cfgs,
and the PeleeNet twin of the flagship differing from it only by CSP."""
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from detector import build_model
from detector.config import load_config
from detector.models.backbones import resolve_backbone_config
from detector.models.info import count_params
from detector.models.layers import SPP

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "configs"


def params(cfg) -> int:
    with torch.device("meta"):  # counts only: no memory, no init time
        return count_params(build_model(cfg))


def test_cspdarknet53_panet_spp_matches_yolov4_cfg():
    """yolov4.cfg at 80 classes: 64,363,101 parameters (darknet's parameter-free SPP)."""
    assert params(CFG / "cspdarknet53_panet_spp.yaml") == 64_363_101
    with torch.device("meta"):
        model = build_model(CFG / "cspdarknet53_panet_spp.yaml")
    assert type(model.neck.top[1]) is SPP
    # the YOLOv5 squeeze form stays available under its own name
    cfg = load_config(CFG / "cspdarknet53_panet_spp.yaml", ["model.neck.spp=yolov5"])
    assert params(cfg) == 64_233_565


def darknet_first_stage(stage: dict) -> dict:
    """csresnext50-panet-spp.cfg's first stage: two 1x1 split convs (64 -> 128 bypass, 64 -> 64
    block part), the first block widening 64 -> 128 with darknet's partial shortcut."""
    return dict(stage, split="two_conv", expand_ratio=0.75, split_ratio=1 / 3, block_ratio=0.5,
                shortcut="darknet", transition_channels=128, expand_act=True)


def test_cspresnext50_panet_spp_against_the_authors_cfg():
    """Ours keeps timm's cspresnext50 (so timm's ImageNet weights load): 12,416 params more
    than csresnext50-panet-spp.cfg's 56,942,525, all in the first stage; with darknet's
    first stage the count is the cfg's exactly."""
    assert params(CFG / "cspresnext50_panet_spp.yaml") == 56_942_525 + 12_416
    cfg = load_config(CFG / "cspresnext50_panet_spp.yaml")
    backbone = resolve_backbone_config(CFG / "backbones" / "cspresnext50.yaml")
    backbone["stages"] = [darknet_first_stage(backbone["stages"][0])] + list(backbone["stages"][1:])
    cfg["model"]["backbone"] = backbone
    assert params(cfg) == 56_942_525


def _model_section(path):
    cfg = load_config(path)
    cfg.pop("_source", None)
    cfg["train"] = {k: v for k, v in cfg["train"].items() if k != "name"}
    model = dict(cfg["model"])
    model.pop("backbone"), model.pop("backbone_weights")
    return cfg, model


def test_pelee_twin_differs_from_the_flagship_only_by_csp():
    flag, flag_model = _model_section(CFG / "csppelee_efm_sam.yaml")
    twin, twin_model = _model_section(CFG / "pelee_efm_sam.yaml")
    assert flag_model == twin_model  # neck, head, loss, classes
    assert {k: v for k, v in flag.items() if k != "model"} == \
        {k: v for k, v in twin.items() if k != "model"}  # data, train (but its name), eval
    csp = resolve_backbone_config(flag["model"]["backbone"])
    plain = resolve_backbone_config(twin["model"]["backbone"])
    for key in ("in_channels", "num_classes", "stem", "norm", "act", "act_slope",
                "feature_channels", "global_pool", "dropout"):
        assert csp.get(key) == plain.get(key), key
    # ReLU in the slim flagship: PeleeNet's own, and the one ORT folds into int8 convs
    assert csp["act"] == "relu" and flag["model"]["neck"]["act"] == flag["model"]["head"]["act"] == "relu"
    per_stage = ("depth", "out_channels", "block", "stride", "bottle_ratio", "growth_rate", "down")
    cd, pd = csp["stage_defaults"], plain["stage_defaults"]
    for cs, ps in zip(csp["stages"], plain["stages"], strict=True):
        for key in per_stage:
            assert {**cd, **cs}.get(key) == {**pd, **ps}.get(key), key
    with torch.device("meta"):
        twin_model = build_model(CFG / "pelee_efm_sam.yaml")
    assert not any(isinstance(m, nn.LeakyReLU) for m in twin_model.modules())
    assert any(isinstance(m, nn.ReLU) for m in twin_model.backbone.modules())


@pytest.mark.parametrize("bad", ["v4", 3])
def test_spp_form_is_checked(bad):
    from detector.config import ConfigError

    with pytest.raises(ConfigError, match="model.neck.spp"):
        build_model(CFG / "cspdarknet53_panet_spp.yaml", [f"model.neck.spp={bad}"])
