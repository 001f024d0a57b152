"""Necks on random feature lists shaped like the real backbones' (PeleeNet: 128/256/512/704 at
strides 4/8/16/32; CSPDarknet53: 128/256/512/1024)."""
import pytest
import torch

from detector.config import ConfigError
from detector.models.layers import SPP, SqueezeSPP
from detector.models.necks import EFM, SAM, Maxout, build_neck

PELEE = ([128, 256, 512, 704], [4, 8, 16, 32])
DARKNET = ([128, 256, 512, 1024], [4, 8, 16, 32])
STRIDES = [8, 16, 32]


def features(channels, strides, h=64, w=96, batch=2):
    torch.manual_seed(0)
    return [torch.randn(batch, c, h // s, w // s) for c, s in zip(channels, strides)]


def test_maxout_is_max_over_channel_halves():
    x = torch.randn(2, 6, 3, 4)
    y = Maxout()(x)
    assert y.shape == (2, 3, 3, 4)
    torch.testing.assert_close(y, torch.maximum(x[:, :3], x[:, 3:]))
    with pytest.raises(ValueError, match="even"):
        Maxout()(torch.randn(1, 3, 2, 2))


def test_sam_is_pointwise_attention():
    sam = SAM(8).eval()
    x = torch.randn(2, 8, 5, 7)
    y = sam(x)
    torch.testing.assert_close(y, x * torch.sigmoid(sam.bn(sam.conv(x))))
    assert sam.conv.kernel_size == (1, 1) and sam.conv.out_channels == 8  # full C x H x W map


def test_darknet_spp_is_parameter_free_pools_concatenated_with_the_input():
    spp = SPP(64)
    x = torch.randn(1, 64, 10, 6)
    y = spp(x)
    assert y.shape == (1, 256, 10, 6) and spp.out_channels == 256
    assert sum(p.numel() for p in spp.parameters()) == 0
    torch.testing.assert_close(y[:, :64], x)  # the input itself, then the 5 / 9 / 13 pools
    torch.testing.assert_close(y[:, 64:128], torch.nn.functional.max_pool2d(x, 5, 1, 2))
    with pytest.raises(ConfigError, match="odd"):
        SPP(64, (4, 8))


def test_yolov5_squeeze_spp_keeps_resolution():
    y = SqueezeSPP(64, 32)(torch.randn(1, 64, 10, 6))
    assert y.shape == (1, 32, 10, 6)


def test_efm_fuses_neighbouring_scales_with_maxout():
    neck = build_neck({"type": "efm", "channels": [32, 48, 64]}, *PELEE, STRIDES)
    # level s fuses s/2, s and 2s (indices into the backbone's feature list); 32 has no 64
    assert neck.inputs == [[0, 1, 2], [1, 2, 3], [2, 3]]
    assert neck.out_channels == [96, 144, 128]
    outs = neck(features(*PELEE))
    assert [tuple(o.shape) for o in outs] == [(2, 96, 8, 12), (2, 144, 4, 6), (2, 128, 2, 3)]
    assert sum(isinstance(m, Maxout) for m in neck.modules()) == 8
    assert sum(isinstance(m, SAM) for m in neck.modules()) == 3


def activation_bytes(neck, feats):
    """Bytes of every intermediate map the neck produces (forward hooks on its leaf modules)."""
    total = []

    def hook(_m, _i, out):
        total.append(out.numel() * out.element_size())

    handles = [m.register_forward_hook(hook) for m in neck.modules() if not list(m.children())]
    with torch.no_grad():
        outs = neck(feats)
    for h in handles:
        h.remove()
    # the concatenations are not modules: count the fused maps themselves too
    return sum(total) + sum(o.numel() * o.element_size() for o in outs)


def test_efm_with_maxout_holds_less_activation_memory():
    feats = features(*PELEE)
    with_maxout = build_neck({"type": "efm", "channels": 32, "maxout": True}, *PELEE, STRIDES).eval()
    without = build_neck({"type": "efm", "channels": 32, "maxout": False}, *PELEE, STRIDES).eval()
    # same projections, but without Maxout the concatenated maps keep twice the channels
    assert [c * 2 for c in with_maxout.out_channels] == without.out_channels
    fused_with = sum(o.numel() for o in with_maxout(feats))
    fused_without = sum(o.numel() for o in without(feats))
    assert fused_with * 2 == fused_without
    mem_with, mem_without = activation_bytes(with_maxout, feats), activation_bytes(without, feats)
    assert mem_with < mem_without, (mem_with, mem_without)


@pytest.mark.parametrize("refine,down", [("spp", "maxpool"), ("none", "conv"), ("sam", "conv")])
def test_efm_ablation_switches(refine, down):
    neck = build_neck({"type": "efm", "channels": 16, "refine": refine, "down": down}, *PELEE, STRIDES)
    outs = neck(features(*PELEE))
    assert [o.shape[1] for o in outs] == [48, 48, 32]
    assert (neck.spp is not None) == (refine == "spp")
    has_sam = any(isinstance(m, SAM) for m in neck.modules())
    assert has_sam == (refine == "sam")


def test_efm_without_stride4_feature_skips_that_input():
    channels, strides = [256, 512, 704], [8, 16, 32]
    neck = build_neck({"type": "efm", "channels": 16}, channels, strides, STRIDES)
    assert neck.inputs == [[0, 1], [0, 1, 2], [1, 2]]
    outs = neck(features(channels, strides))
    assert [o.shape[1] for o in outs] == [32, 48, 32]


def test_gfm_sums_all_scales_plus_global_context():
    neck = build_neck({"type": "gfm", "channels": [96, 144, 128]}, *PELEE, STRIDES)
    assert neck.sources == [0, 1, 2, 3]
    outs = neck(features(*PELEE))
    assert [tuple(o.shape) for o in outs] == [(2, 96, 8, 12), (2, 144, 4, 6), (2, 128, 2, 3)]


def test_panet_spp_shapes():
    neck = build_neck({"type": "panet", "channels": [32, 64, 128]}, *DARKNET, STRIDES)
    outs = neck(features(*DARKNET))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 8, 12), (2, 64, 4, 6), (2, 128, 2, 3)]
    assert neck.top[1].__class__ is SPP  # darknet's form by default
    assert neck.top[2][0].conv.in_channels == 4 * 128  # the next 1x1 conv fuses the pools
    v5 = build_neck({"type": "panet", "channels": [32, 64, 128], "spp": "yolov5"}, *DARKNET, STRIDES)
    assert isinstance(v5.top[1], SqueezeSPP) and v5.top[2][0].conv.in_channels == 128
    assert [tuple(o.shape) for o in v5(features(*DARKNET))] == [tuple(o.shape) for o in outs]
    no_spp = build_neck({"type": "panet", "channels": [32, 64, 128], "spp": "none"}, *DARKNET, STRIDES)
    assert not any(isinstance(m, (SPP, SqueezeSPP)) for m in no_spp.modules())
    # older configs and checkpoints wrote a boolean: true was the squeeze form
    legacy = build_neck({"type": "panet", "channels": [32, 64, 128], "spp": True}, *DARKNET, STRIDES)
    assert isinstance(legacy.top[1], SqueezeSPP)
    assert not any(isinstance(m, (SPP, SqueezeSPP)) for m in build_neck(
        {"type": "panet", "channels": [32, 64, 128], "spp": False}, *DARKNET, STRIDES).modules())
    with pytest.raises(ConfigError, match="model.neck.spp must be one of darknet, yolov5, none"):
        build_neck({"type": "panet", "spp": "v4"}, *DARKNET, STRIDES)


def test_neck_activation_is_explicit_and_checked():
    default = build_neck({"type": "efm"}, *PELEE, STRIDES)
    slopes = {m.negative_slope for m in default.modules() if isinstance(m, torch.nn.LeakyReLU)}
    assert slopes == {0.1}  # the necks' default is darknet's leaky, written out in the config
    plain = build_neck({"type": "efm", "act": "leaky_relu"}, *PELEE, STRIDES)
    assert {m.negative_slope for m in plain.modules() if isinstance(m, torch.nn.LeakyReLU)} == {0.01}
    with pytest.raises(ConfigError, match="model.neck.act.slope: 'leaky_relu' takes no option 'slope'"):
        build_neck({"type": "efm", "act": {"name": "leaky_relu", "slope": 0.1}}, *PELEE, STRIDES)
    with pytest.raises(ConfigError, match="model.neck.act: unknown activation 'leaky'"):
        build_neck({"type": "gfm", "act": "leaky"}, *PELEE, STRIDES)


def test_neck_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="model.neck.chanels.*did you mean 'channels'"):
        build_neck({"type": "efm", "chanels": 32}, *PELEE, STRIDES)
    with pytest.raises(ConfigError, match="unknown neck type 'fpn'"):
        build_neck({"type": "fpn"}, *PELEE, STRIDES)
    with pytest.raises(ConfigError, match="refine"):
        build_neck({"type": "efm", "refine": "cbam"}, *PELEE, STRIDES)
    with pytest.raises(ConfigError, match="stride 64"):
        build_neck({"type": "efm"}, *PELEE, [8, 16, 64])
    with pytest.raises(ConfigError, match="one per output level"):
        build_neck({"type": "efm", "channels": [16, 16]}, *PELEE, STRIDES)
    assert isinstance(build_neck({"type": "efm"}, *PELEE, STRIDES), EFM)
