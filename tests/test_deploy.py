"""Deploy re-parameterisation: the same network as trained, in forms ORT keeps in its blocked layout."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from detector import build_model
from detector.config import load_config
from detector.export.onnx_export import export_onnx
from detector.models.blocks import CSPStage
from detector.models.deploy import EvenAvgPool, reparameterize
from conftest import calibrated_detector

FLAGSHIP = "configs/csppelee_efm_sam.yaml"


def _spread_bn(model, seed=0):
    """Non-trivial BatchNorm statistics (as after training), so folding is really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.45 + 0.8)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.4 + 0.8)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
    return model.eval()


def _close(ref, out):
    ref = ref if isinstance(ref, (list, tuple)) else [ref]
    out = out if isinstance(out, (list, tuple)) else [out]
    assert len(ref) == len(out)
    for r, o in zip(ref, out):
        assert r.shape == o.shape
        torch.testing.assert_close(o, r, atol=2e-5 * r.abs().max().item() + 1e-6, rtol=1e-4)


@pytest.fixture(scope="module")
def flagship():
    return calibrated_detector({"model": {**load_config(FLAGSHIP)["model"], "num_classes": 3}})


def test_flagship_deploy_equals_the_trained_network(flagship):
    x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = flagship(x)
        fused = copy.deepcopy(flagship).fuse()
        out = fused(x)
    _close(ref, out)
    assert fused.deployed and type(fused.backbone).__name__ == "DeployBackbone"
    # the deployed graph carries no slice, no Max and no ceil-mode average pool
    names = {type(m).__name__ for m in fused.modules()}
    assert "Maxout" not in names and "CSPStage" not in names


@pytest.mark.parametrize("cfg", ["configs/backbones/csppeleenet.yaml", "configs/backbones/peleenet.yaml",
                                 # growth 16 in stage 1 (8-channel branches), CSP and plain
                                 "configs/backbones/csppeleenet_slim.yaml", "configs/backbones/peleenet_slim.yaml",
                                 "configs/backbones/cspresnet10.yaml",
                                 pytest.param("configs/backbones/cspdarknet53.yaml", marks=pytest.mark.slow)])
def test_backbone_classifiers_deploy_exactly(cfg):
    torch.manual_seed(0)
    model = _spread_bn(build_model(cfg))
    size = 64 if "darknet" in cfg else 96
    x = torch.rand(1, 3, size, size)
    with torch.no_grad():
        ref = model(x)
        out = reparameterize(copy.deepcopy(model))(x)
    _close(ref, out)


# the flagship's forms run by default, the rest with -m slow
DEFAULT_FORMS = {("slice", "last", "avgpool"), ("slice", "both", "avgpool"), ("conv", "first", "avgpool"),
                 ("two_conv", "last", "conv")}
FORMS = [(s, f, "avgpool") for s in ("slice", "conv", "two_conv") for f in ("both", "first", "last")]
FORMS += [(s, "last", "conv") for s in ("slice", "conv", "two_conv")]
FORMS = [f if f in DEFAULT_FORMS else pytest.param(*f, marks=pytest.mark.slow) for f in FORMS]


@pytest.mark.parametrize("split,fusion,down", FORMS)
def test_every_csp_stage_form_deploys_exactly(split, fusion, down):
    """Chained CSP stages: the next stage's split folded into this one's last convs."""
    torch.manual_seed(1)
    stages = nn.Sequential(
        CSPStage(32, 64, 2, "pelee", 1, down="none", split=split, fusion=fusion, growth_rate=16),
        CSPStage(64, 96, 1, "pelee", 2, down=down, split=split, fusion=fusion, growth_rate=16),
        CSPStage(96, 64, 1, "bottleneck", 2, down=down, split=split, fusion=fusion, bottle_ratio=0.5))
    from detector.models.backbones import CSPBackbone, CSPNetConfig, StageConfig, StemConfig
    cfg = CSPNetConfig(name="t", num_classes=4, stem=StemConfig(channels=(32,), kernel_size=3, pool="none"),
                       stages=tuple(StageConfig(depth=1, out_channels=c, block="dark", stride=2, csp=False)
                                    for c in (32, 32, 32)))
    model = CSPBackbone(cfg)
    model.stages = stages  # our stages, with the backbone's stem and head
    model.feature_indices = [0, 1, 2]
    model.head = type(model.head)(64, 4)
    model = _spread_bn(model)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        deployed = reparameterize(copy.deepcopy(model))
        out = deployed(x)
    _close(ref, out)


def test_even_pool_is_the_same_average_and_falls_back_on_odd_maps():
    pool = nn.AvgPool2d(2, 2, ceil_mode=True)
    even = EvenAvgPool(pool)
    for hw in ((8, 8), (7, 9)):
        x = torch.rand(1, 16, *hw)
        torch.testing.assert_close(even(x), pool(x))


@pytest.fixture(scope="module")
def flagship_onnx(flagship, tmp_path_factory):
    # the network alone (raw outputs): the default file adds the box decoding's slices after it
    return export_onnx(flagship, tmp_path_factory.mktemp("deploy") / "flagship.onnx", 128, raw=True)


def test_exported_graph_has_no_slice_max_or_ceil_pool(flagship_onnx):
    import onnx

    nodes = onnx.load(str(flagship_onnx)).graph.node
    ops = {n.op_type for n in nodes}
    assert not ops & {"Split", "Slice", "Max"}, ops
    for n in nodes:
        if n.op_type == "AveragePool":
            assert all(a.i == 0 for a in n.attribute if a.name == "ceil_mode")


def test_ort_keeps_the_flagship_in_its_blocked_layout(flagship_onnx, tmp_path):
    """The profile-derived property itself: ORT inserts layout reorders only at the outputs (and
    around the 8-channel pieces of the slim backbone's first stage; padding them to 16 is exact
    but made OpenCV DNN 10% slower, docs/deploy.md)."""
    import onnx
    import onnxruntime as ort

    from detector.export.onnx_runtime import session_options

    opts = session_options(threads=1)  # the shared pool if an earlier test set one up
    opts.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(str(flagship_onnx), opts, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(tmp_path / "opt.onnx")).graph
    if not any("nchwc" in n.domain for n in graph.node):
        pytest.skip("this CPU has no blocked (NCHWc) kernels in ONNX Runtime")
    outputs = {o.name for o in graph.output}
    producer = {o: n for n in graph.node for o in n.output}
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def in_narrow_stage(node):
        """The flagship's stage 1 grows by 16 channels per dense layer: its two branches give
        8-channel pieces, narrower than ORT's 16-channel block on AVX-512 CPUs, so ORT reorders
        around them (the stage is still faster than at growth 32; docs/detector.md, "Flagship
        widths")."""
        near = [producer.get(node.input[0])] + consumers.get(node.output[0], [])
        return any(m is not None and "/stages.0/blocks/" in m.name for m in near)

    reorders = [n for n in graph.node if n.op_type in ("ReorderInput", "ReorderOutput")]
    stray = [n.name for n in reorders if not (n.op_type == "ReorderOutput" and n.output[0] in outputs)
             and not in_narrow_stage(n)]
    assert not stray, f"layout reorders inside the graph: {stray}"
    unblocked = [n.name for n in graph.node if n.op_type in ("AveragePool", "MaxPool", "Conv")
                 and "nchwc" not in n.domain and "/stages.0/blocks/" not in n.name]
    assert not unblocked, unblocked


def test_opencv_dnn_runs_the_deployed_graph(flagship, flagship_onnx):
    cv2 = pytest.importorskip("cv2")
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = flagship(x)
    net = cv2.dnn.readNetFromONNX(str(flagship_onnx))
    net.setInput(x.numpy())
    outs = net.forward(["out_s8", "out_s16", "out_s32"])
    for r, o in zip(ref, outs):
        assert np.abs(r.numpy() - o).max() < 1e-3 * max(1.0, float(r.abs().max()))
