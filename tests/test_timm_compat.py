"""timm compatibility: exact parameter counts, state_dict conversion, equal logits, loading."""
from pathlib import Path

import pytest
import torch

from detector.engine.checkpoint import CheckpointError, save_checkpoint
from detector.models import build_backbone, from_timm_state_dict, load_pretrained_backbone
from detector.models.info import count_params

timm = pytest.importorskip("timm")
CFG = Path(__file__).resolve().parents[1] / "configs" / "backbones"

# timm 1.0.x with a 1000-class head (docs/paper.md)
TIMM_PARAMS = {"cspdarknet53": 27_642_184, "cspresnet50": 21_616_168,
               "cspresnext50": 20_569_896, "darknet53": 41_609_928}


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights *and* BN statistics, so an unmapped buffer cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif name.endswith("bn.weight"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.5)
            else:  # conv / fc weights, scaled to keep activations O(1) through 50 layers
                fan_in = t[0].numel() if t.dim() > 1 else 1
                t.copy_(torch.randn(t.shape, generator=g) / fan_in ** 0.5)
    return model.eval()


@pytest.mark.parametrize("arch", list(TIMM_PARAMS))
def test_param_counts_match_timm_exactly(arch):
    assert count_params(build_backbone(CFG / f"{arch}.yaml")) == TIMM_PARAMS[arch]


@pytest.mark.parametrize("arch", ["cspresnet50", "cspdarknet53", "cspresnext50", "darknet53"])
def test_timm_state_dict_converts_and_logits_match(arch):
    ref = randomize(timm.create_model(arch, pretrained=False))
    assert count_params(ref) == TIMM_PARAMS[arch]
    ours = build_backbone(CFG / f"{arch}.yaml")
    ours.load_state_dict(from_timm_state_dict(ref.state_dict(), arch), strict=True)
    ours.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert expected.abs().max() > 1e-3  # a meaningful comparison, not two zero tensors
    assert (expected - got).abs().max().item() <= 1e-4
    with torch.no_grad():  # the features the detector uses are timm's stage outputs
        taps = ref.forward_intermediates(x, intermediates_only=True)
        feats = ours.forward_features(x)
    for f in feats:
        assert any(t.shape == f.shape and torch.allclose(t, f, atol=1e-4) for t in taps)


def test_state_dict_of_another_arch_is_refused():
    sd = timm.create_model("cspresnet50", pretrained=False, num_classes=0).state_dict()
    with pytest.raises(ValueError, match="not a timm 'cspdarknet53'.*missing"):
        from_timm_state_dict(sd, "cspdarknet53")
    with pytest.raises(ValueError, match="no timm conversion for arch 'resnet18'"):
        from_timm_state_dict(sd, "resnet18")


def test_load_pretrained_backbone_from_timm_file(tmp_path):
    ref = randomize(timm.create_model("cspresnet50", pretrained=False), seed=3)
    path = tmp_path / "cspresnet50_timm.pth"
    torch.save({"module." + k: v for k, v in ref.state_dict().items()}, path)  # DDP-style keys
    backbone = load_pretrained_backbone(build_backbone(CFG / "cspresnet50.yaml", num_classes=0),
                                        path).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[-1], ref.forward_features(x), atol=1e-4, rtol=1e-4)


def test_load_pretrained_backbone_ours_and_wrong_arch(tmp_path):
    src = randomize(build_backbone(CFG / "csppeleenet.yaml"), seed=5)
    path = tmp_path / "csppeleenet_imagenet.pt"
    save_checkpoint({"model": src.state_dict(), "config": {"model": {"arch": "csppeleenet"}}}, path)
    dst = load_pretrained_backbone(build_backbone(CFG / "csppeleenet.yaml", num_classes=0), path)
    for k, v in dst.state_dict().items():
        assert torch.equal(v, src.state_dict()[k]), k
    # a head of another size is dropped, not an error, when fine-tuning to new classes
    ten = load_pretrained_backbone(build_backbone(CFG / "csppeleenet.yaml", num_classes=10), path)
    assert torch.equal(ten.stages[0].blocks[0].branch1a.conv.weight,
                       src.stages[0].blocks[0].branch1a.conv.weight)
    with pytest.raises(CheckpointError, match="another architecture"):
        load_pretrained_backbone(build_backbone(CFG / "peleenet.yaml", num_classes=0), path)


def test_load_pretrained_backbone_from_a_detector_checkpoint(tmp_path):
    """A detector checkpoint (keys ``backbone.*``, ``neck.*``, ``head.*``) gives its backbone."""
    src = randomize(build_backbone(CFG / "peleenet.yaml", num_classes=0), seed=7)
    state = {"backbone." + k: v for k, v in src.state_dict().items()}
    state["neck.conv.weight"] = torch.zeros(1)
    state["head.0.weight"] = torch.zeros(1)
    path = tmp_path / "detector.pt"
    save_checkpoint({"model": state}, path)
    dst = load_pretrained_backbone(build_backbone(CFG / "peleenet.yaml", num_classes=0), path)
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in dst.state_dict().items())
