"""The F1-optimal confidence a training run chooses: stored in best.pt / last.pt, carried into
the ONNX metadata, used by Predictor, predict and eval unless the user passes a threshold, and
said in words; eval and the final training evaluation write the figures."""
import importlib
import json
import logging

import cv2
import numpy as np
import pytest
import torch

from detector.engine.checkpoint import save_checkpoint
from detector.evaluation.curves import CONF_GRID
from detector.export.onnx_export import read_metadata
from detector.inference import Predictor
from detector.models.state_dict import CONF_KEY
from conftest import TINY_MODEL, naive_mean_f1, tiny_config

STORED = 0.37
FIGURES = ("P_curve.png", "R_curve.png", "F1_curve.png", "PR_curve.png", "confusion_matrix.png",
           "confusion_matrix_normalized.png", "confusion_matrix.csv", "val_batch0_labels_vs_pred.png")


def _tool(name):
    return importlib.import_module(f"detector.cli.{name}")


@pytest.fixture(scope="module")
def checkpoints(tiny_data, tmp_path_factory):
    """The tiny detector (confident random outputs) saved with and without a stored threshold."""
    from detector import build_model
    torch.manual_seed(0)
    model = build_model({"model": dict(TINY_MODEL, num_classes=5)})
    with torch.no_grad():  # scores from ~0.15 to ~0.7: thresholds make a difference
        for pred in model.head.preds:
            pred.bias.add_(5.0)
    folder = tmp_path_factory.mktemp("ckpts")
    state = {"model": model.state_dict(), "names": tiny_data["names"],
             "config": {"model": model.config, "data": tiny_data, "train": {"img_size": 64}}}
    return (save_checkpoint(dict(state, **{CONF_KEY: STORED}), folder / "stored.pt"),
            save_checkpoint(state, folder / "plain.pt"))


def test_predictor_uses_the_stored_threshold_unless_given_one(checkpoints):
    stored, plain = checkpoints
    assert torch.load(stored, weights_only=True)[CONF_KEY] == STORED
    image = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    p = Predictor(stored)
    assert (p.conf_thres, p.conf_source) == (STORED, "stored")
    assert p.describe_conf() == "conf 0.37 (F1-optimal on val, stored in the checkpoint)"
    scores = p(image)["scores"]
    assert len(scores) and scores.min() >= STORED
    assert Predictor(stored, conf_thres=0.01)(image)["scores"].min() < STORED   # it did filter
    mine = Predictor(stored, conf_thres=0.6)
    assert (mine.conf_thres, mine.describe_conf()) == (0.6, "conf 0.6 (yours)")
    assert mine(image)["scores"].min(initial=1.0) >= 0.6
    old = Predictor(plain)   # a checkpoint from before the key: the default, and it says so
    assert (old.conf_thres, old.conf_source) == (0.25, "default")
    assert old.describe_conf() == "conf 0.25 (default: none stored with the weights)"


def test_an_onnx_export_carries_the_checkpoints_threshold(checkpoints, tmp_path):
    stored, plain = checkpoints
    onnx_path = tmp_path / "m.onnx"
    assert _tool("export").main(["--weights", str(stored), "-o", str(onnx_path), "--no-verify"]) == 0
    assert read_metadata(onnx_path)[CONF_KEY] == torch.load(stored, weights_only=True)[CONF_KEY]
    p = Predictor(onnx_path)
    assert p.conf_thres == STORED
    assert p.describe_conf() == "conf 0.37 (F1-optimal on val, stored in the ONNX file)"
    assert Predictor(onnx_path, conf_thres=0.5).conf_thres == 0.5
    old = tmp_path / "old.onnx"
    assert _tool("export").main(["--weights", str(plain), "-o", str(old), "--no-verify"]) == 0
    assert CONF_KEY not in read_metadata(old) and Predictor(old).conf_source == "default"


def test_predict_says_which_threshold_it_uses(checkpoints, tmp_path, caplog):
    stored, plain = checkpoints
    cv2.imwrite(str(tmp_path / "a.png"), np.full((64, 64, 3), 90, np.uint8))
    args = ["--source", str(tmp_path / "a.png"), "--no-show"]
    cases = [([str(stored)], "conf 0.37 (F1-optimal on val, stored in the checkpoint)"),
             ([str(stored), "--conf", "0.5"], "conf 0.5 (yours)"),
             ([str(plain)], "conf 0.25 (default: none stored with the weights)")]
    for weights, said in cases:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="demo"):
            assert _tool("demo").main(["--weights", *weights, *args]) == 0
        assert said in caplog.text


def test_eval_writes_the_figures_at_the_stored_or_given_threshold(checkpoints, tmp_path, capsys):
    stored, _ = checkpoints
    common = ["--workers", "0", "--batch", "4"]
    assert _tool("eval").main(["--weights", str(stored), "--save-json", str(tmp_path / "a" / "d.json"),
                               *common]) == 0
    text = capsys.readouterr().out
    assert "precision / recall / F1 at conf 0.37 (F1-optimal on val, stored in the checkpoint)" in text
    assert "inst     P     R    F1" in text and "circle" in text and f"figures: {tmp_path / 'a'}/" in text
    for name in FIGURES:
        assert (tmp_path / "a" / name).stat().st_size > 0, name
    metrics = json.loads((tmp_path / "a" / "d_metrics.json").read_text())
    assert metrics["conf_thres"] == 0.001 and metrics["report_conf"] == STORED  # AP keeps its own threshold

    assert _tool("eval").main(["--weights", str(stored), "--save-json", str(tmp_path / "b" / "d.json"),
                               "--report-conf", "0.6", "--max-images", "4", *common]) == 0
    assert "at conf 0.6 (yours)" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "d_metrics.json").read_text())["report_conf_source"] == "user"
    with pytest.raises(SystemExit):
        _tool("eval").main(["--weights", str(stored), "--report-conf", "1.5"])


def _noisy_evaluate(captured):
    """An ``evaluate`` that scores the val batches' own targets, shifted, some dropped, some with
    the wrong class, plus false positives, with seeded scores: a detector with a known mix of
    right and wrong answers, whatever the few training steps learnt."""
    def evaluate(net, loader, evaluator=None, **kwargs):
        rng = np.random.default_rng(0)
        for batch in loader:
            preds = []
            for t in batch["targets"]:
                t = t.numpy()[rng.uniform(size=len(t)) < 0.85]
                labels = t[:, 0].astype(int)
                flip = rng.uniform(size=len(labels)) < 0.2
                labels[flip] = (labels[flip] + 1) % 5
                boxes = t[:, 1:] + rng.integers(-2, 3, (len(t), 4))
                xy = rng.uniform(0, 44, (2, 2))
                boxes = np.concatenate([boxes, np.hstack([xy, xy + 16])])
                labels = np.concatenate([labels, rng.integers(0, 5, 2)])
                preds.append({"boxes": boxes, "scores": rng.uniform(0.05, 1.0, len(boxes)), "labels": labels})
            evaluator.update(preds, batch["meta"])
        captured.append(evaluator)
        return evaluator.summarize()
    return evaluate


def test_training_stores_the_f1_argmax_of_its_final_evaluation(tiny_data, tmp_path, monkeypatch):
    from detector.engine.trainer import Trainer
    captured = []
    monkeypatch.setattr("detector.evaluation.evaluate", _noisy_evaluate(captured))
    Trainer(tiny_config(tiny_data, tmp_path, epochs=1, tensorboard=False), progress=False).train()
    run = tmp_path / "tiny"
    reference = naive_mean_f1(captured[-1].cocoeval, CONF_GRID)   # from pycocotools' arrays
    assert reference.max() > 0
    for name in ("best.pt", "last.pt"):
        stored = torch.load(run / name, weights_only=True)[CONF_KEY]
        assert isinstance(stored, float)
        i = int(np.argmin(np.abs(CONF_GRID - stored)))
        assert CONF_GRID[i] == pytest.approx(stored) and reference[i] == pytest.approx(reference.max())
    for name in FIGURES:
        assert (run / name).stat().st_size > 0, name
    log = (run / "train.log").read_text()
    assert "val precision / recall / F1 at conf" in log and "circle" in log
    assert Predictor(run / "best.pt").conf_source == "stored"
