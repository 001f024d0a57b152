"""The three-line inference API: configs and checkpoints, odd image sizes and formats."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from detector.engine.checkpoint import CheckpointError, save_checkpoint
from detector.inference import Predictor

ROOT = Path(__file__).resolve().parents[1]
FLAGSHIP = ROOT / "configs/csppelee_efm_sam.yaml"
SHAPES = ["circle", "square", "triangle", "star", "cross"]  # configs/data/shapes.yaml


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    predictor = Predictor(FLAGSHIP, img_size=64, conf_thres=0.3)
    with torch.no_grad():  # confident outputs, as a trained model gives: every image has boxes
        for pred in predictor.model.head.preds:
            pred.bias.add_(3.0)
    return predictor


def check_result(res, shape, boxes_expected=True):
    """One image's result: its structure always; with boxes, that they lie in the image."""
    h, w = shape[:2]
    assert set(res) == {"boxes", "scores", "labels", "names"}
    assert res["boxes"].dtype == np.float32 and res["boxes"].ndim == 2 and res["boxes"].shape[1:] == (4,)
    assert res["scores"].dtype == np.float32 and res["scores"].ndim == 1
    assert res["labels"].dtype == np.int64 and res["labels"].ndim == 1
    assert isinstance(res["names"], list)
    assert len(res["boxes"]) == len(res["scores"]) == len(res["labels"]) == len(res["names"])
    assert (len(res["boxes"]) > 0) == boxes_expected
    b = res["boxes"]
    assert (b[:, [0, 2]] >= 0).all() and (b[:, [0, 2]] <= w).all()
    assert (b[:, [1, 3]] >= 0).all() and (b[:, [1, 3]] <= h).all()
    assert (b[:, 2:] >= b[:, :2]).all()
    assert ((res["scores"] > 0.3) & (res["scores"] <= 1)).all()
    assert [SHAPES[i] for i in res["labels"]] == res["names"]


def test_config_predictor_takes_classes_from_the_data(predictor):
    assert predictor.names == SHAPES and predictor.model.num_classes == 5
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in predictor.model.modules())  # fused


def test_any_size_gray_bgra_and_lists(predictor):
    rng = np.random.default_rng(0)
    odd = rng.integers(0, 255, (100, 150, 3), dtype=np.uint8)  # not a multiple of 32
    res = predictor(odd)
    assert isinstance(res, dict)
    check_result(res, odd.shape)
    gray = rng.integers(0, 255, (77, 45), dtype=np.uint8)
    bgra = rng.integers(0, 255, (333, 500, 4), dtype=np.uint8)
    results = predictor([odd, gray, bgra])
    assert isinstance(results, list) and len(results) == 3
    for res, img in zip(results, (odd, gray, bgra)):
        check_result(res, img.shape)
    assert predictor([]) == []


def test_no_boxes_is_an_empty_result_of_the_same_structure(predictor, monkeypatch):
    monkeypatch.setattr(predictor, "conf_thres", 1.0)  # no score passes
    img = np.zeros((100, 150, 3), np.uint8)
    res = predictor(img)
    check_result(res, img.shape, boxes_expected=False)
    assert res["boxes"].shape == (0, 4) and res["scores"].shape == (0,) and res["labels"].shape == (0,)
    assert res["names"] == []


def test_the_backend_runs_a_prepared_batch_alone_and_in_steps(predictor):
    """What a timing loop calls (forward_fn: the network alone) and the steps a call makes."""
    img = np.random.default_rng(1).integers(0, 255, (100, 150, 3), dtype=np.uint8)
    x, _ = predictor.preprocess([img])
    raw = predictor.runner.forward_fn(x)()
    assert [tuple(r.shape[2:]) for r in raw] == [(8, 8), (4, 4), (2, 2)]
    out = predictor.runner.infer(x)
    dets = predictor.runner.boxes(out, predictor.conf_thres, predictor.iou_thres, predictor.max_det)
    np.testing.assert_allclose(dets[0]["scores"], predictor(img)["scores"], rtol=1e-6)


def test_bad_images_are_clear_errors(predictor):
    with pytest.raises(ValueError, match="unsupported image shape"):
        predictor(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(TypeError, match="numpy image"):
        predictor([torch.zeros(3, 10, 10)])


def _logit(p):
    return math.log(p / (1 - p))


def test_boxes_are_mapped_back_through_the_letterbox(predictor, monkeypatch):
    # a 100x150 (h x w) image at img_size 64: ratio 64/150, resized to 43x64, 10 px padding on top
    img = np.zeros((100, 150, 3), np.uint8)
    ratio, top = 64 / 150, (64 - round(100 * 64 / 150)) // 2
    assert top == 10
    nc = 5
    raw = [torch.full((1, 3, 5 + nc, 64 // s, 64 // s), -20.0) for s in (8, 16, 32)]
    cell = raw[0][0, 1, :, 3, 3]  # stride 8, anchor 16x30, cell (gy 3, gx 3): box [20, 13, 36, 43]
    cell[:4] = 0.0
    cell[4] = _logit(0.9)
    cell[5 + 2] = _logit(0.8)
    raw = [r.reshape(1, -1, r.shape[3], r.shape[4]) for r in raw]
    monkeypatch.setattr(predictor.model, "forward", lambda x: raw)
    res = predictor(img)
    expected = np.array([[20 / ratio, (13 - top) / ratio, 36 / ratio, (43 - top) / ratio]], np.float32)
    np.testing.assert_allclose(res["boxes"], expected, atol=1e-3)
    np.testing.assert_allclose(res["scores"], [0.72], atol=1e-5)
    assert res["labels"].tolist() == [2] and res["names"] == ["triangle"]


def test_checkpoint_predictor_matches_the_model(tmp_path):
    torch.manual_seed(1)
    source = Predictor(FLAGSHIP, img_size=64, fuse=False)
    ckpt = tmp_path / "best.pt"
    save_checkpoint({"model": source.model.state_dict(),
                     "config": {"model": source.model.config, "data": "configs/data/shapes.yaml"},
                     "names": SHAPES, "epoch": 3}, ckpt)
    loaded = Predictor(ckpt, img_size=64)
    assert loaded.names == SHAPES
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(source.model(x), loaded.model(x)):
            torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)
    other = tmp_path / "other.pt"
    cfg = dict(source.model.config, num_classes=7)
    save_checkpoint({"model": source.model.state_dict(), "config": {"model": cfg}}, other)
    with pytest.raises(CheckpointError, match="does not fit"):
        Predictor(other)


def test_onnx_predictor_runs_no_torch_op_but_nms(tmp_path):
    """An ONNX frame touches torch only for NMS on the few candidates: torch's idle-spinning
    OpenMP threads after a large op slowed ONNX Runtime's next run (docs/deploy.md)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from detector.export.onnx_export import export_onnx
    from conftest import calibrated_detector

    model = calibrated_detector({"model": {"num_classes": 3, "backbone": "configs/backbones/peleenet.yaml",
                                           "neck": {"type": "efm", "channels": 16}, "head": {"width": 32}}})
    with torch.no_grad():
        for pred in model.head.preds:
            pred.bias.add_(3.0)  # boxes above the threshold, so NMS has work
    path = export_onnx(model, tmp_path / "m.onnx", 128, names=["a", "b", "c"])
    predictor = Predictor(path, conf_thres=0.3)
    frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(str(func))
            return func(*args, **(kwargs or {}))

    with Ops() as ops:
        det = predictor(frame)
    assert len(det["boxes"]) > 0 and "torchvision.nms.default" in ops.names
    trivial = {"aten.lift_fresh.default", "aten.slice.Tensor", "aten.detach.default", "aten.alias.default"}
    assert set(ops.names) - trivial == {"torchvision.nms.default"}, ops.names
    assert set(predictor.timing) == {"pre", "model", "post"} and predictor.timing["model"] > 0
    x, _ = predictor.preprocess([frame])  # the network alone, as a timing loop runs it
    (out,) = predictor.runner.forward_fn(x)()
    assert isinstance(x, np.ndarray) and out.shape[0] == 1 and out.shape[2] == 5 + 3
