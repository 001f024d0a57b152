"""Evaluation end to end on coco128: the data pipeline, both engines and tools/eval.py."""
import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from detector.config import ConfigError
from detector.data import build_dataloader, build_dataset
from detector.engine.checkpoint import save_checkpoint
from detector.evaluation import COCOEvaluator, evaluate
from detector.export.onnx_export import export_onnx
from detector.export.onnx_runtime import ONNXRuntimeDetector
from conftest import calibrated_detector

ROOT = Path(__file__).resolve().parents[1]
COCO128 = ROOT.parent / "shared" / "data" / "coco128"
pytestmark = pytest.mark.skipif(not COCO128.is_dir(), reason="shared coco128 data not found")

DATA = {"json": "configs/data/coco128.yaml", "yolo": "configs/data/coco128_yolo.yaml"}
MODEL = {"model": {"num_classes": 80, "backbone": "configs/backbones/peleenet.yaml",
                   "neck": {"type": "efm", "channels": 16}, "head": {"width": 32}}}


def _tool(name):
    return importlib.import_module(f"detector.cli.{name}")


@pytest.fixture(scope="module")
def model():
    return calibrated_detector(MODEL, batches=1)


@pytest.mark.parametrize("layout", ["json", "yolo"])
def test_dataset_ground_truth_through_the_pipeline_scores_ap_1(layout):
    """Each batch's targets (letterboxed input pixels) fed back as detections: the letterbox
    inverse, the category ids and the in-memory ground truth of YOLO labels must all agree."""
    ds = build_dataset(DATA[layout], "val", 320)
    ev = COCOEvaluator(ds.coco_gt(), ds.label_to_cat_id, ds.names)
    for batch in build_dataloader(ds, 32, workers=0, shuffle=False):
        preds = [{"boxes": t[:, 1:], "scores": torch.ones(len(t)), "labels": t[:, 0].long()}
                 for t in batch["targets"]]
        ev.update(preds, batch["meta"])
    m = ev.summarize()
    assert m["num_images"] == 128
    assert m["AP"] > 0.99 and m["AP50"] == pytest.approx(1.0)
    cat_ids = {d["category_id"] for d in m["detections"]}
    if layout == "json":  # COCO's own ids (1..90 with gaps), not the contiguous 0..79
        assert 90 in cat_ids and 0 not in cat_ids and cat_ids <= set(ds.coco_gt().getCatIds())
    else:
        assert cat_ids <= set(range(80))


def test_pytorch_and_onnxruntime_evaluate_alike(model, tmp_path):
    ds = build_dataset(DATA["json"], "val", 128)
    subset = torch.utils.data.Subset(ds, range(6))
    loader = build_dataloader(subset, 3, workers=0, shuffle=False)

    def run(net):
        ev = COCOEvaluator(ds.coco_gt(), ds.label_to_cat_id, ds.names)
        return evaluate(net, loader, conf_thres=0.01, iou_thres=0.6, max_det=100, progress=False, evaluator=ev)

    fused = copy.deepcopy(model).fuse()
    ref = run(fused)
    assert not fused.training
    onnx_model = ONNXRuntimeDetector(export_onnx(model, tmp_path / "m.onnx", 128, batch=3))
    got = run(onnx_model)
    assert ref["num_images"] == got["num_images"] == 6
    assert len(ref["detections"]) == len(got["detections"]) > 0
    for k in ("AP", "AP50", "AP75"):
        assert got[k] == pytest.approx(ref[k], abs=1e-4)
    assert set(ref["timing"]) >= {"pre", "infer", "nms", "total"} and ref["timing"]["infer"] > 0
    assert ref["timing"]["images"] == 6


def test_evaluate_restores_training_mode_and_refuses_half_on_cpu(model):
    ds = build_dataset(DATA["yolo"], "val", 128)
    loader = build_dataloader(torch.utils.data.Subset(ds, range(2)), 2, workers=0, shuffle=False)
    ev = COCOEvaluator(ds.coco_gt(), ds.label_to_cat_id, ds.names)
    model.train()
    try:
        out = evaluate(model, loader, progress=False, evaluator=ev, max_det=10)
        assert model.training and out["num_images"] == 2
        with pytest.raises(ValueError, match="CUDA"):
            evaluate(model, loader, half=True, progress=False, evaluator=ev)
    finally:
        model.eval()


def test_eval_tool_on_yolo_data_writes_coco_results(model, tmp_path, capsys):
    ckpt = save_checkpoint({"model": model.state_dict(),
                            "config": {"model": model.config, "data": DATA["yolo"], "train": {"img_size": 128}},
                            "names": build_dataset(DATA["yolo"], "val", 128).names}, tmp_path / "best.pt")
    out_json = tmp_path / "dets.json"
    assert _tool("eval").main(["--weights", str(ckpt), "--max-images", "4", "--workers", "0",
                               "--batch", "2", "--save-json", str(out_json)]) == 0
    text = capsys.readouterr().out
    for word in ("AP50", "APl", "class", "pre-process", "inference", "NMS"):
        assert word in text
    dets = json.loads(out_json.read_text())
    assert dets and {"image_id", "category_id", "bbox", "score"} <= set(dets[0])
    metrics = json.loads((tmp_path / "dets_metrics.json").read_text())
    assert metrics["num_images"] == 4 and metrics["img_size"] == 128 and "AP" in metrics
    # an exported model of another size is refused with a way out
    onnx_path = export_onnx(model, tmp_path / "m.onnx", 160)
    with pytest.raises(ConfigError, match="exported for 160x160"):
        _tool("eval").main(["--weights", str(onnx_path), "--data", DATA["yolo"], "--size", "128"])


def test_an_export_carries_its_data_so_eval_needs_no_data_flag(model, tmp_path, capsys):
    names = build_dataset(DATA["yolo"], "val", 128).names
    ckpt = save_checkpoint({"model": model.state_dict(), "names": names,
                            "config": {"model": model.config, "data": DATA["yolo"], "train": {"img_size": 128},
                                       "eval": {"conf_thres": 0.002}}}, tmp_path / "best.pt")
    assert _tool("export").main(["--weights", str(ckpt), "--no-verify"]) == 0
    onnx_path = tmp_path / "best_128.onnx"
    capsys.readouterr()
    # default workers (2): loader processes fork beside a live ONNX Runtime session
    assert _tool("eval").main(["--weights", str(onnx_path), "--max-images", "2",
                               "--batch", "2", "--save-json", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    assert "conf 0.002" in out and "AP50" in out  # the checkpoint's eval section came along
