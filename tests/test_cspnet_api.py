"""The reference CSPNet API: block classes or callables in ``stage_defs``, our block classes
exported by name, and errors that name the bad entry."""
import functools

import pytest
import torch
import torch.nn as nn

from detector.config import ConfigError


def test_reference_example_runs_as_written():
    from detector.models import CSPNet, ResNetBottleneck

    model = CSPNet(in_channels=3, stem_channels=64,
                   stage_defs=[(3, 256, ResNetBottleneck, True), (4, 512, ResNetBottleneck, True),
                               (6, 1024, ResNetBottleneck, True), (3, 2048, ResNetBottleneck, True)],
                   num_classes=1000, split_ratio=0.5)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 128, 128))
    assert logits.shape == (1, 1000)
    assert model.stage_channels == [256, 512, 1024, 2048]
    assert model.stage_strides == [8, 16, 32, 64]  # stem 4, then every stage downsamples
    assert all(isinstance(b, ResNetBottleneck) for s in model.stages for b in s.blocks)
    assert [len(s.blocks) for s in model.stages] == [3, 4, 6, 3]


def test_block_classes_are_exported_under_their_names():
    import detector.models as m
    from detector.models.blocks import BLOCKS

    for name in ("ResNetBottleneck", "ResNetBasicBlock", "ResNeXtBottleneck", "DarknetBottleneck",
                 "DenseLayer", "TwoWayDenseLayer"):
        assert getattr(m, name) in BLOCKS.values(), name
    assert m.DarknetBottleneck is BLOCKS["dark"]


def test_names_and_classes_build_the_same_network():
    from detector.models import CSPNet, DarknetBottleneck

    by_name = CSPNet(stem_channels=32, stage_defs=[(1, 64, "dark", True), (2, 128, "dark", True),
                                                   (1, 256, "dark", True)],
                     num_classes=10, pre_kernel_size=3)
    by_class = CSPNet(stem_channels=32,
                      stage_defs=[(1, 64, DarknetBottleneck, True), (2, 128, DarknetBottleneck, True),
                                  (1, 256, DarknetBottleneck, True)],
                      num_classes=10, pre_kernel_size=3)
    by_class.load_state_dict(by_name.state_dict())  # same keys and shapes
    by_name.eval(), by_class.eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(by_name(x), by_class(x))


class SEBlock(nn.Module):
    """A user's own block: 3x3 conv + squeeze-excitation, no stride, no norm/act options."""

    def __init__(self, in_channels, out_channels, reduction=4):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(out_channels, out_channels // reduction, 1),
                                nn.ReLU(), nn.Conv2d(out_channels // reduction, out_channels, 1), nn.Sigmoid())

    def forward(self, x):
        y = self.conv(x)
        return y * self.fc(y)


def test_a_users_own_block_class_and_callable():
    from detector.models import CSPNet

    seen = {}

    def wide(in_channels, out_channels, stride=1, *, act, **options):
        seen.update(options, act=act, stride=stride)
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), act())

    model = CSPNet(stem_channels=16,
                   stage_defs=[(2, 32, SEBlock, True), (1, 64, functools.partial(SEBlock, reduction=2), True),
                               (1, 128, wide, True), (1, 256, "basic", True)],
                   num_classes=5, act=nn.SiLU)
    assert isinstance(model.stages[0].blocks[0], SEBlock)
    assert model.stages[1].blocks[0].fc[1].out_channels == 16  # 64 / 2 split -> 32 / reduction 2
    assert seen["act"] is nn.SiLU and seen["stride"] == 1 and "groups" in seen
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    # a user block sits in a CSP stage like ours: split, blocks on one part, transitions
    stage = model.stages[0]
    assert stage.split_sizes == (16, 16) and stage.conv_transition.conv.out_channels == 32


@pytest.mark.parametrize("entry,match", [
    ((3, 256, "bottlenek", True), r"stage_defs\[1\] = \(3, 256, 'bottlenek', True\): block: "
                                  r"unknown block 'bottlenek'.*did you mean 'bottleneck'"),
    ((3, 256, 42, True), r"stage_defs\[1\] = \(3, 256, 42, True\): block: a block must be a name"),
    ((3, 256, True), r"stage_defs\[1\] = \(3, 256, True\): each entry must be \(num_blocks, "
                     r"out_channels, block, downsample\)"),
    ((0, 256, "basic", True), r"stage_defs\[1\].*num_blocks must be an int >= 1"),
    ((3, "256", "basic", True), r"stage_defs\[1\].*out_channels must be an int"),
    ((3, 256, "basic", "yes"), r"stage_defs\[1\].*downsample must be True or False"),
    ("basic", r"stage_defs\[1\] = 'basic': each entry"),
])
def test_malformed_entry_is_a_clear_error_naming_it(entry, match):
    from detector.models import CSPNet

    with pytest.raises(ConfigError, match=match):
        CSPNet(stage_defs=[(1, 64, "basic", False), entry])


def test_a_block_breaking_the_contract_is_named():
    from detector.models import CSPNet

    def no_module(in_channels, out_channels):
        return in_channels

    with pytest.raises(TypeError, match=r"stage_defs\[0\].*block no_module\(16, 16, \.\.\.\) "
                                        r"returned int, not an nn.Module"):
        CSPNet(stage_defs=[(1, 32, no_module, True)])

    def one_arg(channels):
        return nn.Identity()

    with pytest.raises(TypeError, match=r"stage_defs\[0\].*block one_arg does not follow the "
                                        r"block contract"):
        CSPNet(stage_defs=[(1, 32, one_arg, True)])
    with pytest.raises(ConfigError, match=r"stage_defs must be a list"):
        CSPNet(stage_defs="basic")
