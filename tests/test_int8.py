"""INT8 export: calibrated on the data YAML's train split, opened by eval/demo like any export."""
import json

import cv2
import numpy as np
import pytest
import torch

from detector.engine.checkpoint import save_checkpoint
from detector.export.onnx_export import export_onnx, read_metadata
from detector.export.quantize import QuantizationError, calibration_images, quantize_onnx
from conftest import calibrated_detector

SMALL = {"model": {"num_classes": 2, "backbone": "configs/backbones/peleenet.yaml",
                   "neck": {"type": "efm", "channels": 16}, "head": {"width": 32}}}
NAMES = ["a", "b"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A YOLO-layout data YAML with 6 train images of mixed sizes (and one val image)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 1)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(n):
            h, w = (90, 130) if i % 2 else (120, 80)
            img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            cv2.rectangle(img, (10, 10), (50, 60), (255, 0, 0), -1)
            cv2.imwrite(str(root / "images" / split / f"{i}.jpg"), img)
            (root / "labels" / split / f"{i}.txt").write_text("0 0.3 0.3 0.2 0.3\n")
    yaml = root / "tiny.yaml"
    yaml.write_text(f"format: yolo\nroot: {root}\ntrain: images/train\nval: images/val\nnames: [a, b]\n")
    return yaml


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = calibrated_detector(SMALL)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    cfg = {"model": model.config, "train": {"img_size": 96}}
    save_checkpoint({"model": model.state_dict(), "config": cfg, "names": NAMES, "epoch": 1}, path)
    return model, path


def test_calibration_images_are_letterboxed_like_inference(tiny_data):
    from detector.inference import Predictor

    batch = calibration_images(tiny_data, 3, 96, progress=False)
    assert batch.shape == (3, 3, 96, 96) and batch.dtype == np.float32
    assert 0.0 <= batch.min() and batch.max() <= 1.0
    # image 0 of the split, as Predictor would feed it (BGR file -> RGB letterbox / 255)
    pred = Predictor({"model": SMALL["model"]}, img_size=96)
    img = cv2.imread(str(sorted((tiny_data.parent / "images" / "train").glob("*.jpg"))[0]))
    x, _ = pred.preprocess([img])
    np.testing.assert_allclose(batch[0], x[0].numpy(), atol=1e-6)


def test_export_cli_int8_runs_in_eval_and_demo_paths(checkpoint, tiny_data, capsys):
    import detector.cli.export as tool
    from detector.inference import Predictor

    model, ckpt = checkpoint
    assert tool.main(["--weights", str(ckpt), "--int8", "--data", str(tiny_data), "--calib-images", "4"]) == 0
    out = capsys.readouterr().out
    fp32, int8 = ckpt.with_name("best_96.onnx"), ckpt.with_name("best_96_int8.onnx")
    assert fp32.is_file() and int8.is_file() and "INT8 static QDQ" in out
    meta = read_metadata(int8)
    assert meta["int8"] and meta["names"] == NAMES and meta["img_size"] == [96, 96]
    assert meta["calibration"]["images"] == 4
    import onnx
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # eval / demo open .onnx through Predictor -> ExportedBackend (ONNXRuntimeDetector)
    loaded = Predictor(str(int8))
    assert loaded.backend == "onnxruntime" and loaded.names == NAMES
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    decoded = loaded.model.decoded(x)
    with torch.no_grad():
        ref = model.decode(model(x)).numpy()
    assert decoded.shape == ref.shape  # quantized: close to the float network, not equal
    assert np.abs(decoded[..., 4:] - ref[..., 4:]).mean() < 0.1
    # the box decoding after the prediction convs stays float: no Q/DQ on any path back from
    # the output to the first Conv
    graph = onnx.load(str(int8)).graph
    producer = {o: n for n in graph.node for o in n.output}
    stack, seen = [graph.output[0].name], set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        assert node.op_type not in ("QuantizeLinear", "DequantizeLinear"), node.name
        if node.op_type != "Conv":
            stack.extend(node.input)
    assert any(producer[i].op_type == "DequantizeLinear" for n in graph.node if n.op_type == "Conv"
               for i in n.input[:1] if i in producer)  # while the convs do run quantized
    result = Predictor(str(int8), conf_thres=0.01)(np.full((70, 110, 3), 128, np.uint8))
    assert set(result) >= {"boxes", "scores", "labels"}


def test_int8_needs_calibration_data(checkpoint, tmp_path, capsys):
    import detector.cli.export as tool

    _, ckpt = checkpoint
    with pytest.raises(SystemExit) as e:
        tool.main(["--weights", str(ckpt), "--int8"])
    assert e.value.code != 0 and "--data" in capsys.readouterr().err
    empty = tmp_path / "empty"
    (empty / "images" / "train").mkdir(parents=True)
    (empty / "images" / "val").mkdir(parents=True)
    (empty / "d.yaml").write_text(f"format: yolo\nroot: {empty}\ntrain: images/train\nval: images/val\nnames: [a, b]\n")
    code = tool.main(["--weights", str(ckpt), "--int8", "--data", str(empty / "d.yaml"), "-o",
                      str(tmp_path / "m.onnx"), "--no-verify"])
    assert code == 2 and "no images in the train split" in capsys.readouterr().err
    code = tool.main(["--weights", str(ckpt), "--int8", "--data", str(tmp_path / "missing.yaml"), "-o",
                      str(tmp_path / "m2.onnx"), "--no-verify"])
    assert code == 2 and "calibration data" in capsys.readouterr().err


def test_graphs_ort_cannot_quantize_are_refused_clearly(checkpoint, tmp_path):
    model, _ = checkpoint
    nms = export_onnx(model, tmp_path / "nms.onnx", 64, nms=True, names=NAMES)
    calib = np.random.default_rng(0).random((2, 3, 64, 64), dtype=np.float32)
    with pytest.raises(QuantizationError, match="NMS"):
        quantize_onnx(nms, tmp_path / "q.onnx", calib)
    raw = export_onnx(model, tmp_path / "raw.onnx", 64, names=NAMES, raw=True)
    with pytest.raises(QuantizationError, match="model takes 64x64"):
        quantize_onnx(raw, tmp_path / "q.onnx", np.zeros((1, 3, 32, 32), np.float32))
    # a graph without any quantizable op
    import onnx
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Relu", ["images"], ["y"])], "g",
                          [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "relu.onnx"))
    with pytest.raises(QuantizationError, match="no Conv"):
        quantize_onnx(tmp_path / "relu.onnx", tmp_path / "q.onnx", np.zeros((1, 3, 8, 8), np.float32))
    json.dumps(read_metadata(raw))  # metadata stays plain JSON


def test_each_concat_chain_shares_one_range_so_ort_copies_bytes(checkpoint, tmp_path):
    """QLinearConcat re-quantizes every input whose scale differs from the output's; with one
    range per concatenation chain it is a copy (the INT8 flagship spent 16% of its time there)."""
    import onnx
    from onnx import numpy_helper

    model, _ = checkpoint
    fp32 = export_onnx(model, tmp_path / "m.onnx", 64, names=NAMES)
    calib = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    graph = onnx.load(str(quantize_onnx(fp32, tmp_path / "q.onnx", calib))).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    consumers = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def qparams(node):  # (scale, zero point) of a Q or DQ node
        return float(init[node.input[1]]), int(init[node.input[2]])

    checked = 0
    for n in graph.node:
        if n.op_type != "Concat":
            continue
        ins = [producer.get(i) for i in n.input]
        outs = [c for c in consumers.get(n.output[0], []) if c.op_type == "QuantizeLinear"]
        if not outs or not all(p is not None and p.op_type == "DequantizeLinear" for p in ins):
            continue  # the float decode part
        out_q = qparams(outs[0])
        assert all(qparams(p) == out_q for p in ins), n.name
        checked += 1
    assert checked >= 5  # the dense layers' concatenations


def test_concat_range_groups_follow_chains_and_range_passing_ops():
    """Chained concats and the max-pool in front of one share a group; integer shape concats
    form their own group (they get no override: the calibrator has no range for them); a
    skipped (float decode) concat joins nothing; max-pool indices are not linked."""
    from onnx import TensorProto, helper

    from detector.export.quantize import concat_range_groups

    f = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, None)  # noqa: E731
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p", "idx"], kernel_shape=[2, 2], name="pool"),
        helper.make_node("Concat", ["p", "y"], ["c1"], axis=1, name="cat1"),
        helper.make_node("Concat", ["c1", "z"], ["c2"], axis=1, name="cat2"),
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Concat", ["s", "s"], ["sc"], axis=0, name="shape_cat"),
        helper.make_node("Concat", ["w", "v"], ["out"], axis=1, name="decode_cat"),
    ]
    graph = helper.make_graph(nodes, "g", [f(n) for n in "xyzwv"], [f("c2"), f("out")])
    groups = sorted(sorted(g) for g in concat_range_groups(helper.make_model(graph), ["decode_cat"]))
    assert groups == [["c1", "c2", "p", "x", "y", "z"], ["s", "sc"]]
