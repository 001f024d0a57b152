"""Building blocks: shapes, CSP split ratio and fusion variants, error messages."""
import pytest
import torch
import torch.nn as nn

from detector.config import ConfigError
from detector.models.blocks import (BLOCKS, ConvNormAct, CSPStage, DarkBlock, DenseLayer,
                                    PeleeStem, PlainStage, ResNetBasicBlock, ResNetBottleneck,
                                    ResNeXtBottleneck, TwoWayDenseLayer, get_act, get_block)


def test_conv_norm_act_names_and_fusable():
    m = ConvNormAct(3, 8, 3, 2, act="leaky_relu").eval()
    assert [n for n, _ in m.named_children()] == ["conv", "bn", "act"]
    assert m.conv.bias is None and m.conv.padding == (1, 1)
    m.bn.running_mean.uniform_(-1, 1)
    m.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(1, 3, 16, 16)
    fused = torch.nn.utils.fusion.fuse_conv_bn_eval(m.conv, m.bn)
    torch.testing.assert_close(m.act(fused(x)), m(x), atol=1e-5, rtol=1e-5)
    assert m(x).shape == (1, 8, 8, 8)


def test_leaky_slope_and_unknown_act():
    assert get_act("leaky_relu", 0.1)().negative_slope == 0.1
    with pytest.raises(ConfigError, match="unknown activation 'lrelu'"):
        get_act("lrelu")


@pytest.mark.parametrize("cls,kw,in_c,out_c,stride", [
    (ResNetBasicBlock, {}, 16, 32, 2),
    (ResNetBasicBlock, {"shortcut": "darknet"}, 16, 32, 2),
    (ResNetBottleneck, {}, 32, 64, 1),
    (ResNeXtBottleneck, {"bottle_ratio": 1.0}, 64, 64, 1),
    (DarkBlock, {}, 32, 32, 1),
])
def test_residual_blocks_shapes(cls, kw, in_c, out_c, stride):
    blk = cls(in_c, out_c, stride, **kw)
    y = blk(torch.randn(2, in_c, 16, 16))
    assert y.shape == (2, out_c, 16 // stride, 16 // stride) and blk.out_channels == out_c


def test_resnext_is_grouped():
    blk = ResNeXtBottleneck(64, 64, bottle_ratio=1.0)
    assert blk.conv2.conv.groups == 32


def test_darknet_shortcut_has_no_parameters_and_adds_overlap():
    blk = ResNetBasicBlock(8, 16, 2, shortcut="darknet")
    assert sum(p.numel() for p in blk.shortcut.parameters()) == 0
    res, x = torch.zeros(1, 16, 4, 4), torch.arange(8 * 64.).view(1, 8, 8, 8)
    out = blk.shortcut(res, x)
    torch.testing.assert_close(out[:, :8], x[:, :, ::2, ::2])
    assert out[:, 8:].abs().sum() == 0


def test_dense_layers_grow_by_growth_rate():
    x = torch.randn(1, 64, 8, 8)
    assert DenseLayer(64, growth_rate=32)(x).shape[1] == 96
    layer = TwoWayDenseLayer(64, growth_rate=32, bottle_ratio=2)
    y = layer(x)
    assert y.shape == (1, 96, 8, 8) and torch.equal(y[:, :64], x)  # input passes through
    assert layer.branch2c.conv.kernel_size == (3, 3)  # second branch: two stacked 3x3


def test_pelee_stem_stride_4():
    stem = PeleeStem(3, 32)
    assert stem(torch.randn(1, 3, 64, 64)).shape == (1, 32, 16, 16)


@pytest.mark.parametrize("gamma", [0.25, 0.5, 0.75, 0.1])
def test_csp_split_ratio_sets_the_block_share(gamma):
    stage = CSPStage(32, 64, 1, "dark", 2, split_ratio=gamma, block_ratio=gamma)
    bypass, through = stage.split_sizes
    assert through == round(64 * gamma) and bypass + through == 64
    assert stage.blocks[0].conv1.conv.in_channels == through
    assert stage(torch.randn(1, 32, 16, 16)).shape == (1, 64, 8, 8)


@pytest.mark.parametrize("gamma", [0, 1, 1.5, -0.2])
def test_csp_split_ratio_outside_0_1_is_an_error(gamma):
    with pytest.raises(ValueError, match="split_ratio must be in \\(0, 1\\)"):
        CSPStage(32, 64, 1, "dark", split_ratio=gamma)


def test_fusion_variants_structure_and_cost():
    x = torch.randn(1, 64, 16, 16)
    stages = {f: CSPStage(64, 128, 2, "pelee", 1, down="none", split="slice", fusion=f)
              for f in ("both", "first", "last")}
    for f, s in stages.items():
        assert s(x).shape == (1, 128, 16, 16), f
    assert hasattr(stages["both"], "conv_transition_b") and hasattr(stages["both"], "conv_transition")
    assert not hasattr(stages["first"], "conv_transition_b")
    assert not hasattr(stages["last"], "conv_transition")
    n = {f: sum(p.numel() for p in s.parameters()) for f, s in stages.items()}
    assert n["last"] < n["both"] and n["first"] < n["both"]


def test_unknown_fusion_and_block_names():
    with pytest.raises(ConfigError, match="unknown fusion 'lats'.*did you mean 'last'"):
        CSPStage(32, 64, 1, "dark", fusion="lats")
    with pytest.raises(ConfigError, match="unknown block 'bottlenek'.*did you mean 'bottleneck'"):
        get_block("bottlenek")


def test_two_conv_split_equals_conv_and_slice():
    """Two 1x1 convs (darknet's form) compute exactly what one conv + channel slice does."""
    torch.manual_seed(0)
    a = CSPStage(16, 32, 1, "dark", 2, split="conv", block_ratio=0.5).eval()
    b = CSPStage(16, 32, 1, "dark", 2, split="two_conv", block_ratio=0.5).eval()
    sd = dict(a.state_dict())
    w = {k: sd.pop(k) for k in list(sd) if k.startswith("conv_exp.")}
    for k, v in w.items():
        name = k[len("conv_exp."):]
        if v.dim() == 0:
            sd["conv_part1." + name] = sd["conv_part2." + name] = v
        else:
            sd["conv_part1." + name], sd["conv_part2." + name] = v[:16], v[16:]
    b.load_state_dict(sd)
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(a(x), b(x))


def test_plain_stage_dense_transition_and_width_check():
    stage = PlainStage(32, 128, 3, "pelee", 1, down="none", transition=True)
    assert stage(torch.randn(1, 32, 8, 8)).shape == (1, 128, 8, 8)
    with pytest.raises(ValueError, match="stage ends with 128 channels but out_channels is 96"):
        PlainStage(32, 96, 3, "pelee", 1, down="none")


def test_every_block_is_registered():
    assert set(BLOCKS) == {"basic", "bottleneck", "resnext", "dark", "dense", "pelee"}


@pytest.mark.parametrize("split", ["conv", "two_conv", "slice"])
def test_csp_stage_exports_to_onnx(tmp_path, split):
    pytest.importorskip("onnxruntime")
    from detector.export.onnx_runtime import make_session  # honours a process-wide ORT pool

    stage = CSPStage(16, 32, 1, "dark", 2, split=split, down_channels=32).eval()
    x = torch.randn(1, 16, 16, 16)
    path = tmp_path / "stage.onnx"
    torch.onnx.export(stage, x, str(path), opset_version=17, dynamo=False)
    sess = make_session(path, providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), stage(x), atol=1e-5, rtol=1e-4)


def test_stride_without_a_down_layer_is_an_error():
    with pytest.raises(ConfigError, match="stride 2 needs a down layer"):
        PlainStage(32, 32, 1, "dark", 2, down="none")
    with pytest.raises(ConfigError, match="stride 2 needs a down layer"):
        CSPStage(32, 32, 1, "dark", 2, down="none")
