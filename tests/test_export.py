"""ONNX export: the graph must compute what PyTorch computes, in ONNX Runtime and OpenCV DNN."""
import copy

import numpy as np
import pytest
import torch

from detector import build_model
from detector.engine.checkpoint import save_checkpoint
from detector.export.onnx_export import export_onnx, read_metadata
from detector.export.onnx_runtime import ONNXRuntimeDetector
from detector.models.postprocess import postprocess, postprocess_numpy
from conftest import calibrated_detector

# A small real detector (PeleeNet + EFM(SAM) + YOLO head) at a small input keeps this quick.
SMALL = {"model": {"num_classes": 3, "backbone": "configs/backbones/peleenet.yaml",
                   "neck": {"type": "efm", "channels": 16}, "head": {"width": 32}}}
NAMES = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def model():
    return calibrated_detector(SMALL)


@pytest.fixture(scope="module")
def raw_onnx(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "raw.onnx", 128, names=NAMES, raw=True)


@pytest.fixture(scope="module")
def decoded_onnx(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "decoded.onnx", 128, names=NAMES)


def _fused(model):
    return copy.deepcopy(model).fuse()


def test_raw_export_equals_pytorch_in_onnxruntime(model, raw_onnx):
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    ort_model = ONNXRuntimeDetector(raw_onnx)
    out = ort_model(x)
    assert ort_model.output_names == ["out_s8", "out_s16", "out_s32"]
    assert [o.shape for o in out] == [r.shape for r in ref]
    for r, o in zip(ref, out):
        assert (r - o).abs().max().item() < 1e-4
    meta = read_metadata(raw_onnx)
    assert meta["names"] == NAMES and meta["img_size"] == [128, 128] and not meta["nms"]
    # the decoder rebuilt from the stored config decodes like the PyTorch model
    torch.testing.assert_close(ort_model.decode(out), model.decode(ref), atol=1e-3, rtol=1e-4)


def test_default_export_ends_in_pytorchs_decoded_boxes(model, decoded_onnx):
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model.decode(model(x))
    det = ONNXRuntimeDetector(decoded_onnx)
    assert det.outputs == "decoded" and det.output_names == ["predictions"]
    assert read_metadata(decoded_onnx)["outputs"] == "decoded"
    out = det.decoded(x)
    assert out.shape == tuple(ref.shape)
    np.testing.assert_allclose(out[..., :4], ref[..., :4].numpy(), atol=1e-3)  # pixels
    np.testing.assert_allclose(out[..., 4:], ref[..., 4:].numpy(), atol=1e-5)  # probabilities
    with pytest.raises(RuntimeError, match="predict"):
        det(x)  # no raw level outputs in this file


def test_decoded_export_predicts_the_pytorch_pipelines_boxes(model, decoded_onnx, raw_onnx):
    """predict() on a decoded file runs no torch op, yet keeps PyTorch's boxes."""
    conf, iou, max_det = 0.3, 0.45, 25
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = postprocess(_fused(model).decode(_fused(model)(x)), conf, iou, max_det)
    for path in (decoded_onnx, raw_onnx):  # a raw file is decoded by the rebuilt PyTorch head
        (out,) = ONNXRuntimeDetector(path).predict(x, conf, iou, max_det)
        assert 0 < len(ref[0]["boxes"]) == len(out["boxes"])
        torch.testing.assert_close(_canonical(out), _canonical(ref[0]), atol=1e-3, rtol=1e-4)


def test_decoded_export_runs_in_opencv_dnn(model, decoded_onnx):
    cv2 = pytest.importorskip("cv2")
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model.decode(model(x)).numpy()
    net = cv2.dnn.readNetFromONNX(str(decoded_onnx))
    net.setInput(x.numpy())
    out = net.forward()
    assert out.shape == ref.shape
    np.testing.assert_allclose(out[..., :4], ref[..., :4], atol=1e-3)
    np.testing.assert_allclose(out[..., 4:], ref[..., 4:], atol=1e-5)


def test_raw_export_runs_in_opencv_dnn(model, raw_onnx):
    cv2 = pytest.importorskip("cv2")
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
    net = cv2.dnn.readNetFromONNX(str(raw_onnx))
    net.setInput(x.numpy())
    outs = net.forward(["out_s8", "out_s16", "out_s32"])
    for r, o in zip(ref, outs):
        assert o.shape == tuple(r.shape)
        assert np.abs(r.numpy() - o).max() < 1e-4


def test_dynamic_export_takes_other_batch_and_size(model, tmp_path):
    x = torch.rand(2, 3, 96, 160, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(x)
    path = export_onnx(model, tmp_path / "dyn.onnx", 128, dynamic=True, names=NAMES, raw=True)
    out = ONNXRuntimeDetector(path)(x)
    for r, o in zip(ref, out):
        assert r.shape == o.shape and (r - o).abs().max().item() < 1e-4
    # the decoded form too: its grid follows the input size
    path = export_onnx(model, tmp_path / "dyn_decoded.onnx", 128, dynamic=True, names=NAMES)
    out = ONNXRuntimeDetector(path).decoded(x)
    np.testing.assert_allclose(out[..., :4], model.decode(ref)[..., :4].numpy(), atol=1e-3)


def test_fixed_export_refuses_other_sizes_clearly(raw_onnx):
    fixed = ONNXRuntimeDetector(raw_onnx)
    with pytest.raises(ValueError, match="exported for 128x128"):
        fixed(torch.zeros(1, 3, 96, 160))
    with pytest.raises(ValueError, match="batch 1"):
        fixed(torch.zeros(2, 3, 128, 128))


def _canonical(pred):
    pred = {k: torch.as_tensor(v).float() for k, v in pred.items()}
    a = torch.cat([pred["boxes"], pred["scores"][:, None], pred["labels"][:, None]], 1)
    return a[torch.argsort(a[:, 4], descending=True)]


def test_nms_export_gives_the_pytorch_pipelines_boxes(model, tmp_path):
    conf, iou, max_det = 0.3, 0.45, 25
    path = export_onnx(model, tmp_path / "nms.onnx", 128, dynamic=True, nms=True,
                       conf_thres=conf, iou_thres=iou, max_det=max_det, names=NAMES)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = postprocess(_fused(model).decode(_fused(model)(x)), conf, iou, max_det)
    ort_model = ONNXRuntimeDetector(path)
    assert ort_model.has_nms and ort_model.meta["conf_thres"] == conf
    out = ort_model.predict(x)
    assert len(out) == 2
    assert max(len(r["boxes"]) for r in ref) == max_det  # the per-image cap is exercised
    assert min(len(r["boxes"]) for r in ref) > 0
    for r, o in zip(ref, out):
        assert 0 < len(r["boxes"]) <= max_det
        assert len(o["boxes"]) == len(r["boxes"])
        torch.testing.assert_close(_canonical(o), _canonical(r), atol=1e-3, rtol=1e-4)
    with pytest.raises(RuntimeError, match="predict"):
        ort_model(x)


def test_export_cli_from_checkpoint(model, tmp_path, capsys):
    import detector.cli.export as tool
    ckpt = save_checkpoint({"model": model.state_dict(), "config": {"model": model.config},
                            "names": NAMES, "epoch": 1}, tmp_path / "best.pt")
    assert tool.main(["--weights", str(ckpt), "--size", "128"]) == 0
    out = capsys.readouterr().out
    assert "onnx.checker: ok" in out and "max abs difference: boxes" in out
    diff = float(out.split("max abs difference: boxes")[1].split()[0])
    assert diff < 1e-3
    path = tmp_path / "best_128.onnx"
    assert path.is_file() and read_metadata(path)["names"] == NAMES
    with pytest.raises(SystemExit):
        tool.main(["--weights", str(ckpt), "--half"])  # float16 needs CUDA


def test_foreign_onnx_is_a_clear_error(tmp_path):
    net = torch.nn.Conv2d(3, 4, 1)
    torch.onnx.export(net, (torch.zeros(1, 3, 32, 32),), str(tmp_path / "other.onnx"), dynamo=False)
    with pytest.raises(ValueError, match="not exported by cspdet export"):
        ONNXRuntimeDetector(tmp_path / "other.onnx")


def test_nms_export_with_nothing_above_the_threshold(tmp_path):
    torch.manual_seed(0)
    model = build_model({"model": {"num_classes": 2, "backbone": "configs/backbones/resnet10.yaml",
                                   "neck": {"type": "efm", "channels": 8}, "head": {"width": 16}}}).eval()
    with torch.no_grad():
        for pred in model.head.preds:
            pred.bias.fill_(-30.0)  # every score ~1e-13
    det = ONNXRuntimeDetector(export_onnx(model, tmp_path / "empty.onnx", 64, nms=True, dynamic=True))
    out = det.predict(torch.rand(2, 3, 64, 64))
    assert len(out) == 2 and all(o["boxes"].shape == (0, 4) and o["labels"].size == 0 for o in out)


def test_export_size_defaults_to_the_trained_size(model, tmp_path, capsys):
    import detector.cli.export as tool
    ckpt = save_checkpoint({"model": model.state_dict(),
                            "config": {"model": model.config, "train": {"img_size": 256}},
                            "names": NAMES, "epoch": 1}, tmp_path / "best.pt")
    assert tool.main(["--weights", str(ckpt), "--no-verify"]) == 0
    path = tmp_path / "best_256.onnx"
    assert path.is_file(), capsys.readouterr().out
    meta = read_metadata(path)
    assert meta["img_size"] == [256, 256] and meta["trained_img_size"] == 256
    assert tool.main(["--weights", str(ckpt), "--size", "128", "--no-verify"]) == 0  # a size given wins
    assert read_metadata(tmp_path / "best_128.onnx")["img_size"] == [128, 128]


def test_export_a_classification_checkpoint(tmp_path, capsys):
    import onnxruntime as ort

    import detector.cli.export as tool
    from detector.models.backbones import resolve_backbone_config

    cfg = resolve_backbone_config("configs/backbones/csppeleenet.yaml")
    cfg["num_classes"] = 5
    torch.manual_seed(0)
    net = build_model({"model": cfg})
    with torch.no_grad():  # trained-like BN statistics
        net.train()
        net(torch.rand(4, 3, 64, 64))
    net.eval()
    names = [f"c{i}" for i in range(5)]
    ckpt = save_checkpoint({"model": net.state_dict(), "config": {"model": cfg, "train": {"img_size": 64}},
                            "names": names}, tmp_path / "cls.pt")
    assert tool.main(["--weights", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "classifier, 5 classes" in out and "logits max abs difference" in out
    path = tmp_path / "cls_64.onnx"
    meta = read_metadata(path)
    assert meta["task"] == "classify" and meta["names"] == names
    from detector.export.onnx_runtime import make_session
    sess = make_session(path, providers=["CPUExecutionProvider"])  # honours a shared pool
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = net(x)
    got = torch.from_numpy(sess.run(["logits"], {"images": x.numpy()})[0])
    assert got.shape == (1, 5)
    torch.testing.assert_close(got, ref, atol=1e-4 * max(1.0, ref.abs().max().item()), rtol=1e-4)


def test_numpy_postprocess_equals_torch_postprocess():
    """The ONNX path's numpy + OpenCV NMS keeps the boxes torchvision's keeps, best first."""
    g = torch.Generator().manual_seed(5)
    n, c = 2000, 4
    xy = torch.rand(2, n, 2, generator=g) * 200
    wh = torch.rand(2, n, 2, generator=g) * 40 + 2
    decoded = torch.cat([xy, xy + wh, torch.rand(2, n, 1 + c, generator=g)], -1)
    for multi_label in (False, True):
        for conf in (0.01, 0.3):
            ref = postprocess(decoded, conf, 0.5, 100, multi_label=multi_label)
            got = postprocess_numpy(decoded.numpy(), conf, 0.5, 100, multi_label=multi_label)
            for r, o in zip(ref, got):
                assert len(r["boxes"]) == len(o["boxes"]) > 0
                np.testing.assert_allclose(o["scores"], r["scores"].numpy(), rtol=1e-6)  # same order
                np.testing.assert_array_equal(o["labels"], r["labels"].numpy())
                np.testing.assert_allclose(o["boxes"], r["boxes"].numpy(), rtol=1e-6)
    empty = postprocess_numpy(np.zeros((1, 10, 6), np.float32), 0.25)
    assert empty[0]["boxes"].shape == (0, 4) and empty[0]["labels"].dtype == np.int64
