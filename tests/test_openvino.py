"""OpenVINO as a second CPU engine: export (fp32 IR and NNCF INT8), then eval / predict / the
benchmark's runner open the folder like any export. Skipped without the openvino extra.

These tests load OpenVINO's runtime (and its thread pools) into the pytest process, and with it
loaded, unrelated tests of the main run crashed (a segmentation fault, in CI, in one order, not
under a debugger). So this module runs in a pytest process of its own:
tests/test_openvino_apart.py starts it (conftest.py keeps it out of the main run); run it
directly with ``CSPDET_TEST_CHILD=openvino python -m pytest tests/test_openvino.py``.
"""
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import SMALL_MODEL, calibrated_detector

SHAPES = ["circle", "square", "triangle", "star", "cross"]


@pytest.fixture(scope="module")
def shapes_checkpoint(tmp_path_factory, tiny_data):
    """A calibrated small detector of the tiny shapes classes, trained size 64, its data section
    the tiny shapes set (so eval needs no --data)."""
    from detector.engine.checkpoint import save_checkpoint

    model = calibrated_detector({"model": dict(SMALL_MODEL, num_classes=len(SHAPES))})
    path = tmp_path_factory.mktemp("ov") / "best.pt"
    cfg = {"model": model.config, "data": tiny_data, "train": {"img_size": 64},
           "eval": {"img_size": 64, "conf_thres": 0.001, "iou_thres": 0.6, "max_det": 100}}
    save_checkpoint({"model": model.state_dict(), "config": cfg, "names": SHAPES, "epoch": 1}, path)
    return model, path


@pytest.fixture(scope="module")
def exported(shapes_checkpoint, tiny_data, tmp_path_factory):
    """``cspdet export --format openvino --int8`` on the checkpoint: its printed report and files."""
    pytest.importorskip("openvino", reason="OpenVINO tests need the extra: pip install 'cspdet[openvino]'")
    pytest.importorskip("nncf", reason="OpenVINO INT8 needs the extra: pip install 'cspdet[openvino]'")
    import contextlib
    import io
    import json

    import detector.cli.export as tool

    data_yaml = tmp_path_factory.mktemp("data") / "shapes.yaml"
    data_yaml.write_text(json.dumps(tiny_data))  # JSON is YAML
    _, ckpt = shapes_checkpoint
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = tool.main(["--weights", str(ckpt), "--format", "openvino", "--int8", "--data", str(data_yaml),
                        "--calib-images", "8"])
    assert rc == 0
    folder = ckpt.parent
    return {"report": out.getvalue(), "onnx": folder / "best_64.onnx",
            "fp32": folder / "best_64_openvino", "int8": folder / "best_64_int8_openvino"}


def test_export_writes_fp32_and_int8_ir_with_our_metadata(exported):
    import openvino as ov

    from detector.export.openvino_export import read_openvino_metadata

    assert (exported["fp32"] / "model.xml").is_file() and (exported["fp32"] / "model.bin").is_file()
    assert "OpenVINO check against PyTorch (f32): decoded outputs max abs difference" in exported["report"]
    core = ov.Core()
    meta = read_openvino_metadata(core.read_model(str(exported["fp32"] / "model.xml")))
    assert meta["names"] == SHAPES and meta["img_size"] == [64, 64] and meta["engine"] == "openvino"
    assert not meta.get("int8")
    qmodel = core.read_model(str(exported["int8"] / "model.xml"))
    qmeta = read_openvino_metadata(qmodel)
    assert qmeta["int8"] and qmeta["calibration"]["images"] == 8 and qmeta["names"] == SHAPES
    assert any(op.get_type_name() == "FakeQuantize" for op in qmodel.get_ops())


def test_int8_keeps_the_prediction_convs_and_decoding_float(exported):
    """The float tail (prediction convs, decode) takes no quantized input, as in the ORT INT8."""
    import openvino as ov

    from detector.export.openvino_export import ignored_tail

    fp32 = ov.Core().read_model(str(exported["fp32"] / "model.xml"))
    tail = set(ignored_tail(exported["onnx"], fp32))
    assert sum(op.get_type_name() == "Convolution" for op in fp32.get_ops() if op.get_friendly_name() in tail) == 3
    qmodel = ov.Core().read_model(str(exported["int8"] / "model.xml"))
    for op in qmodel.get_ops():
        if op.get_friendly_name() in tail:
            inputs = [op.input_value(i).get_node().get_type_name() for i in range(op.get_input_size())]
            assert "FakeQuantize" not in inputs, op.get_friendly_name()


def test_predictor_runs_the_folder_like_the_onnx_file(exported):
    from detector.inference import Predictor

    ort = Predictor(str(exported["onnx"]))
    ov32 = Predictor(str(exported["fp32"]), openvino_precision="f32")
    assert ov32.backend == "openvino" and ov32.weights_kind == "OpenVINO file"
    assert ov32.names == SHAPES and ov32.img_size == 64
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ref, got = ort.model.decoded(x), ov32.model.decoded(x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got[..., 4:], ref[..., 4:], atol=1e-3)
    np.testing.assert_allclose(got[..., :4], ref[..., :4], atol=0.2)  # pixels at 64 px
    # the .xml itself opens too; the INT8 IR stays near float32 on a calibrated model
    q = Predictor(str(exported["int8"] / "model.xml"))
    assert q.backend == "openvino"
    assert np.abs(q.model.decoded(x)[..., 4:] - ref[..., 4:]).max() < 0.25


def test_eval_cli_scores_the_openvino_export_as_the_onnx_one(exported, tmp_path):
    """`cspdet eval` as users run it: its own process, the default data workers (forked after
    the engine is loaded). Run here in-process, the workers' fork made this pytest process
    crash at its next subprocess spawn (after the export's NNCF run; not seen in a CLI run)."""
    import json

    from conftest import REPO

    scores = {}
    for name in ("onnx", "fp32"):
        out = tmp_path / name / "det.json"
        args = ["--weights", str(exported[name]), "--save-json", str(out), "--no-plots"]
        if name == "fp32":
            args += ["--openvino-precision", "f32"]
        run = subprocess.run([sys.executable, "-m", "detector.cli", "eval", *args], cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        scores[name] = json.loads(out.with_name("det_metrics.json").read_text())
    assert abs(scores["onnx"]["AP50"] - scores["fp32"]["AP50"]) < 0.02


def test_benchmark_runner_times_openvino(exported):
    from detector.benchmark.runner import ENGINES, make_runner

    assert "openvino" in ENGINES
    run = make_runner("openvino", None, exported["onnx"], 64, 1, threads=1)
    outs = run()
    assert len(outs) == 1


def test_benchmark_times_openvino_beside_ort_and_profiles_it(tmp_path):
    """`cspdet benchmark --engines onnxruntime openvino --profile` in a child process: both
    engines' fp32 and INT8 columns, the fastest engine, OpenVINO's own profile."""
    pytest.importorskip("openvino", reason="OpenVINO tests need the extra: pip install 'cspdet[openvino]'")
    from conftest import REPO

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model:\n  num_classes: 3\n  backbone: configs/backbones/resnet10.yaml\n"
                   "  neck: {type: efm, channels: 8}\n  head: {width: 16}\n")
    out = tmp_path / "RESULTS.md"
    run = subprocess.run([sys.executable, "-m", "detector.cli", "benchmark", "--configs", str(cfg), "--sizes", "64",
                          "--no-peers", "--pairs", "none", "--iters", "2", "--warmup", "1", "--block", "2",
                          "--throughput-batch", "0", "--engines", "onnxruntime", "openvino", "--profile",
                          "--output", str(out), "--json", str(tmp_path / "r.json"), "--cache", str(tmp_path / "onnx")],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    text = out.read_text()
    head = next(line for line in text.splitlines() if line.startswith("| model |"))
    assert "| ORT ms | OpenVINO ms | ORT INT8 ms | OpenVINO INT8 ms |" in head
    row = next(line for line in text.splitlines() if line.startswith("| tiny | 64 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 9 and all(c not in ("-", "n/a") for c in cells)
    assert "- tiny @ 64: float32 " in text
    assert "**tiny @ 64 (OpenVINO fp32)**: reference (slow-path) kernels" in text
    assert "| Convolution / " in text and "**tiny @ 64 (OpenVINO INT8)**" in text


def test_without_openvino_the_export_says_how_to_install(shapes_checkpoint, monkeypatch, capsys):
    import detector.cli.export as tool

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    _, ckpt = shapes_checkpoint
    assert tool.main(["--weights", str(ckpt), "--format", "openvino", "--no-verify"]) == 2
    assert "pip install 'cspdet[openvino]'" in capsys.readouterr().err


def test_without_openvino_eval_of_an_openvino_folder_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from detector.cli import run_command

    folder = tmp_path / "best_320_openvino"
    folder.mkdir()
    (folder / "model.xml").write_text("<net/>")
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert run_command("eval", ["--weights", str(folder)]) == 2
    assert "pip install 'cspdet[openvino]'" in capsys.readouterr().err


def test_a_folder_with_two_models_is_refused_by_name(tmp_path):
    pytest.importorskip("openvino", reason="OpenVINO tests need the extra: pip install 'cspdet[openvino]'")
    from detector.export.onnx_runtime import ModelFileError
    from detector.export.openvino_runtime import OpenVINODetector

    for name in ("a.xml", "b.xml"):
        (tmp_path / name).write_text("<net/>")
    with pytest.raises(ModelFileError, match="one .xml model file, found 2"):
        OpenVINODetector(tmp_path)


def test_int8_accuracy_script_tables_every_file_with_its_change(shapes_checkpoint, tiny_data, tmp_path, capsys):
    """benchmarks/int8_accuracy.py: fp32 and INT8 files of each engine scored on val, each INT8
    row with its AP50 change against its own engine's fp32 and per class."""
    import importlib.util
    import json

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("int8_accuracy", REPO / "benchmarks" / "int8_accuracy.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    data_yaml = tmp_path / "shapes.yaml"
    data_yaml.write_text(json.dumps(tiny_data))
    _, ckpt = shapes_checkpoint
    assert script.main(["--weights", str(ckpt), "--data", str(data_yaml), "--calib-images", "4",
                        "--threads", "1", "--out", str(tmp_path / "files")]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ") and " pt |" in line}
    assert "ORT INT8" in rows and all(f"{name} AP50 (change)" in out for name in SHAPES)
    from detector.benchmark.runner import openvino_available
    if openvino_available():
        assert "OpenVINO INT8 (default)" in rows and "| OpenVINO fp32 (f32) |" in out
