"""detector.models.layers: one conv-norm-act and one activation table for every model part."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from detector import build_model
from detector.config import ConfigError
from detector.models import layers
from detector.models.layers import ConvNormAct, get_act, make_act

ROOT = Path(__file__).resolve().parents[1]


def test_models_import_nothing_from_the_engine():
    code = ("import sys, detector.models; "
            "print([m for m in sys.modules if m.startswith('detector.engine')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_one_meaning_per_activation_name():
    assert make_act("leaky_relu").negative_slope == 0.01  # PyTorch's, in every model part
    assert make_act({"name": "leaky_relu", "negative_slope": 0.1}).negative_slope == 0.1
    assert make_act("leaky_relu", negative_slope=0.1).negative_slope == 0.1
    assert isinstance(make_act("gelu"), nn.GELU) and isinstance(make_act("swish"), nn.SiLU)
    assert isinstance(make_act(None), nn.Identity) and isinstance(make_act(nn.ReLU), nn.ReLU)
    assert make_act("relu", inplace=True).inplace and not make_act("relu").inplace


def test_activation_spec_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.act: unknown activation 'lrelu'"):
        get_act("lrelu", where="model.act")
    with pytest.raises(ConfigError, match="model.head.act.slope: 'leaky_relu' takes no option"):
        get_act({"name": "leaky_relu", "slope": 0.1}, where="model.head.act")
    with pytest.raises(ConfigError, match="needs a 'name'"):
        get_act({"negative_slope": 0.1})
    with pytest.raises(ConfigError, match="applies to leaky_relu only"):
        get_act("relu", negative_slope=0.1)
    with pytest.raises(ConfigError, match="two different leaky_relu slopes"):
        get_act({"name": "leaky_relu", "negative_slope": 0.2}, negative_slope=0.1)
    with pytest.raises(ConfigError, match="negative_slope must be a number"):
        get_act({"name": "leaky_relu", "negative_slope": "steep"})


def test_backbone_act_errors_name_the_config_key():
    cfg = {"model": {"arch": "csppeleenet", "act": {"name": "leaky_relu", "slop": 0.1}}}
    with pytest.raises(ConfigError, match="model.act.slop"):
        build_model(cfg)
    cfg = {"model": {"arch": "peleenet", "act": {"name": "relu", "negative_slope": 0.1}}}
    with pytest.raises(ConfigError, match="model.act.negative_slope: 'relu' takes no option"):
        build_model(cfg)
    cfg = {"model": {"arch": "peleenet", "act": {"name": "leaky_relu", "negative_slope": 0.2},
                     "act_slope": 0.1}}
    with pytest.raises(ConfigError, match="model.act: two different leaky_relu slopes"):
        build_model(cfg)


def test_older_act_slope_key_still_reads():
    """Checkpoints saved ``act_slope`` (default 0.01) beside every activation."""
    m = build_model({"model": {"arch": "peleenet", "act": "leaky_relu", "act_slope": 0.1}})
    assert {a.negative_slope for a in m.modules() if isinstance(a, nn.LeakyReLU)} == {0.1}
    m = build_model({"model": {"arch": "peleenet", "act": "silu", "act_slope": 0.01}})
    assert any(isinstance(a, nn.SiLU) for a in m.modules())


def test_padding_keeps_ceil_size():
    for k, s in [(1, 1), (3, 1), (3, 2), (1, 2), (7, 2), (5, 1)]:
        m = ConvNormAct(4, 4, k, s)
        assert m(torch.randn(1, 4, 15, 15)).shape[-1] == -(-15 // s), (k, s)


def test_detector_parts_share_the_layers_module():
    """Backbone, neck and head of the flagship use the one ConvNormAct, with the activation
    the configs write out (ReLU throughout the flagship; darknet's 0.1 slope where a config
    asks for leaky)."""
    model = build_model(ROOT / "configs/csppelee_efm_sam.yaml")
    for part in (model.backbone, model.neck, model.head):
        convs = [m for m in part.modules() if type(m).__name__ == "ConvNormAct"]
        assert convs and all(type(m) is layers.ConvNormAct for m in convs)
        assert all(isinstance(m.act, nn.ReLU) for m in convs if not isinstance(m.act, nn.Identity))
    pelee = build_model(ROOT / "configs/backbones/csppeleenet.yaml")  # the paper's: darknet's leaky
    assert {m.negative_slope for m in pelee.modules() if isinstance(m, nn.LeakyReLU)} == {0.1}
    resnet = build_model(ROOT / "configs/backbones/cspresnet50.yaml")  # timm's layout: timm's slope
    assert {m.negative_slope for m in resnet.modules() if isinstance(m, nn.LeakyReLU)} == {0.01}


def test_no_second_layer_table_left():
    from detector.models import blocks, heads, necks

    for mod in (blocks, necks, heads):
        assert getattr(mod, "ConvNormAct", layers.ConvNormAct) is layers.ConvNormAct
        assert getattr(mod, "ACTIVATIONS", layers.ACTIVATIONS) is layers.ACTIVATIONS
