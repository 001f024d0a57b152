"""PRN neck and the paper's PRN detectors: partial residuals, build, forward, ONNX export, training."""
import copy
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from detector import build_model
from detector.config import ConfigError, load_config
from detector.export.onnx_export import export_onnx
from detector.export.onnx_runtime import ONNXRuntimeDetector
from detector.models.detector import build_detector
from detector.models.loss import YOLOLoss
from detector.models.state_dict import load_checkpoint, model_state
from detector.models.postprocess import postprocess
from detector.models.prn import PRN, PRNConfig, partial_add
from conftest import calibrated_detector

ROOT = Path(__file__).resolve().parents[1]
PRN_CONFIGS = {"csppelee_ref_prn": [8, 16, 32], "cspdensenet_ref_prn": [16, 32]}


def test_partial_add_sums_only_the_common_channels():
    x = torch.arange(4.0).view(1, 4, 1, 1)
    r = torch.full((1, 6, 1, 1), 10.0)
    assert partial_add(x, r).flatten().tolist() == [10, 11, 12, 13]           # r wider: x's width
    assert partial_add(r, x).flatten().tolist() == [10, 11, 12, 13, 10, 10]   # r narrower
    assert partial_add(x, x).flatten().tolist() == [0, 2, 4, 6]


def test_prn_neck_levels_and_widths():
    neck = PRN(PRNConfig(channels=[32, 48, 64]), [16, 40, 80, 160], [4, 8, 16, 32], [8, 16, 32])
    feats = [torch.rand(2, c, 128 // s, 96 // s) for c, s in zip([16, 40, 80, 160], [4, 8, 16, 32])]
    outs = neck(feats)
    assert neck.out_channels == [32, 48, 64]
    assert [tuple(o.shape) for o in outs] == [(2, 32, 16, 12), (2, 48, 8, 6), (2, 64, 4, 3)]
    outs[0].sum().backward()  # the finest level reaches every backbone level it uses
    with pytest.raises(ConfigError, match="list of 3 values"):
        PRN(PRNConfig(channels=[32, 48]), [16, 40, 80, 160], [4, 8, 16, 32], [8, 16, 32])
    with pytest.raises(ConfigError, match="stride 64"):
        PRN(PRNConfig(channels=32), [16, 40, 80, 160], [4, 8, 16, 32], [16, 32, 64])


def test_prn_neck_type_is_registered_and_validated():
    cfg = load_config(ROOT / "configs/cspdensenet_ref_prn.yaml", ["model.neck.chanels=64"])
    with pytest.raises(ConfigError, match="model.neck.chanels.*did you mean 'channels'"):
        build_model(cfg)


@pytest.mark.parametrize("name", list(PRN_CONFIGS))
def test_prn_config_builds_runs_and_round_trips(name):
    strides = PRN_CONFIGS[name]
    model = build_model(ROOT / "configs" / f"{name}.yaml", ["model.num_classes=2"]).eval()
    assert model.strides == strides and model.neck.__class__ is PRN
    with torch.no_grad():
        raw = model(torch.rand(1, 3, 64, 96))
        decoded = model.decode(raw)
    assert [tuple(r.shape) for r in raw] == [(1, 21, 64 // s, 96 // s) for s in strides]
    assert decoded.shape == (1, 3 * sum((64 // s) * (96 // s) for s in strides), 7)
    again = build_detector(model.config)
    assert {k: v.shape for k, v in again.state_dict().items()} == \
           {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name,overrides", [
    ("cspdensenet_ref_prn", []),
    # the paper's YOLOv3 form: its exp decoding must export too
    ("csppelee_ref_prn", ["model.loss.assign=yolov3", "model.loss.neighbor_cells=false",
                          "model.head.decode=exp", "model.head.scale_xy=[1.2, 1.1, 1.05]"]),
])
def test_prn_detector_exports_to_onnx_with_the_pytorch_boxes(name, overrides, tmp_path):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml", ["model.num_classes=3"] + overrides)
    model = calibrated_detector(cfg)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    raw_path = export_onnx(model, tmp_path / "raw.onnx", 128, raw=True)
    ort_raw = ONNXRuntimeDetector(raw_path)
    with torch.no_grad():
        ref = model(x[:1])
    out = ort_raw(x[:1])
    assert len(out) == len(model.strides)
    for r, o in zip(ref, out):
        assert (r - o).abs().max().item() < 1e-3 * max(1.0, r.abs().max().item())
    torch.testing.assert_close(ort_raw.decode(out), model.decode(ref), atol=2e-3, rtol=1e-3)
    # OpenCV DNN (the engine of the paper's CPU figures) reads the partial residuals too
    cv2 = pytest.importorskip("cv2")
    net = cv2.dnn.readNetFromONNX(str(raw_path))
    net.setInput(x[:1].numpy())
    cv_out = net.forward(ort_raw.output_names)
    for r, o in zip(ref, cv_out):
        assert np.abs(r.numpy() - o).max() < 1e-3 * max(1.0, r.abs().max().item())

    conf, iou = 0.3, 0.45
    nms_path = export_onnx(model, tmp_path / "nms.onnx", 128, dynamic=True, nms=True,
                           conf_thres=conf, iou_thres=iou, max_det=50)
    fused = copy.deepcopy(model).fuse()
    with torch.no_grad():
        expected = postprocess(fused.decode(fused(x)), conf, iou, 50)
    got = ONNXRuntimeDetector(nms_path).predict(x)
    assert sum(len(e["boxes"]) for e in expected) > 0
    for e, g in zip(expected, got):
        assert len(g["boxes"]) == len(e["boxes"])
        g = {k: torch.as_tensor(v) for k, v in g.items()}
        order_e, order_g = e["scores"].argsort(descending=True), g["scores"].argsort(descending=True)
        torch.testing.assert_close(g["boxes"][order_g].float(), e["boxes"][order_e].float(), atol=2e-2, rtol=1e-3)


@pytest.mark.parametrize("name", list(PRN_CONFIGS))
def test_prn_detector_trains_one_step(name):
    torch.manual_seed(0)
    model = build_model(ROOT / "configs" / f"{name}.yaml", ["model.num_classes=3"]).train()
    criterion = YOLOLoss(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(2, 3, 128, 128)
    targets = [torch.tensor([[0.0, 10, 20, 60, 90], [2.0, 64, 64, 120, 110]]),
               torch.tensor([[1.0, 30, 30, 100, 80]])]
    before = {k: v.clone() for k, v in model.neck.state_dict().items()}
    total, parts = criterion(model(x), targets)
    assert torch.isfinite(total) and parts["box"] > 0 and parts["cls"] > 0
    opt.zero_grad()
    total.backward()
    assert all(p.grad is not None for p in model.neck.parameters())
    opt.step()
    after = model.neck.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))


def test_the_fastest_prn_detector_trains_through_the_trainer(tmp_path):
    """The real training path (data workers, warm-up, evaluation, checkpoints) with a 2-level
    PRN detector, whose strides and level weights differ from the 3-level defaults."""
    from detector.data.shapes import make_shapes
    from detector.engine.trainer import Trainer

    root = tmp_path / "shapes"
    make_shapes(root, num_train=8, num_val=4, img_size=64, seed=0, progress=False)
    cfg = load_config(ROOT / "configs/cspdensenet_ref_prn.yaml")
    cfg["data"] = {"format": "coco", "root": str(root),
                   "train": {"images": "images/train", "annotations": "annotations/instances_train.json"},
                   "val": {"images": "images/val", "annotations": "annotations/instances_val.json"},
                   "names": ["circle", "square", "triangle", "star", "cross"]}
    cfg["train"] = {"name": "prn", "epochs": 1, "batch_size": 4, "img_size": 64, "workers": 1,
                    "threads": 1, "save_dir": str(tmp_path / "runs"), "warmup_min_iters": 0}
    cfg["eval"] = {"img_size": 64, "conf_thres": 0.001, "iou_thres": 0.6, "max_det": 100, "interval": 1}
    Trainer(cfg, progress=False).train()
    run = tmp_path / "runs" / "prn"
    # the epoch's losses and the evaluation's metrics were logged, as numbers
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1"]
    row = {k: float(v) for k, v in rows[0].items()}
    for key in ("train/box", "train/obj", "train/cls", "train/total", "lr"):
        assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    for key in ("AP", "AP50", "AP75"):
        assert 0.0 <= row[key] <= 1.0, (key, row[key])
    # the checkpoint rebuilds the 2-level detector, loads strictly and predicts finite boxes
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["names"] == cfg["data"]["names"]
    model = build_model({"model": ckpt["config"]["model"]}).eval()
    model.load_state_dict(model_state(ckpt))
    assert model.strides == [16, 32] and model.num_classes == 5
    with torch.no_grad():
        raw = model(torch.rand(1, 3, 64, 64))
        boxes = model.decode(raw)
    assert [tuple(r.shape) for r in raw] == [(1, 3 * 10, 4, 4), (1, 3 * 10, 2, 2)]
    assert boxes.shape == (1, 3 * (16 + 4), 10) and torch.isfinite(boxes).all()
