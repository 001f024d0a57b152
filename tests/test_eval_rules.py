"""One input-size rule (Predictor, eval, demo, ONNX), unreadable images left out of the score,
and class names that must agree between checkpoint and data."""
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detector import build_model
from detector.config import ConfigError
from detector.data import build_dataloader, build_dataset
from detector.engine.checkpoint import save_checkpoint
from detector.evaluation import COCOEvaluator
from detector.inference import Predictor

from rect_datasets import coco_cfg, make_rect_coco, yolo_cfg

SMALL = {"num_classes": 3, "backbone": "configs/backbones/peleenet.yaml",
         "neck": {"type": "efm", "channels": 16}, "head": {"width": 32}}
NAMES = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_rect_coco(tmp_path_factory.mktemp("rects"), n=3)


@pytest.fixture(scope="module")
def ckpt_256(tmp_path_factory, data_root):
    """A checkpoint trained at 256 (its eval.img_size says 320: the trained size wins)."""
    torch.manual_seed(0)
    model = build_model({"model": SMALL})
    path = tmp_path_factory.mktemp("ckpt") / "at256.pt"
    return save_checkpoint({"model": model.state_dict(), "names": NAMES,
                            "config": {"model": model.config, "data": coco_cfg(data_root),
                                       "train": {"img_size": 256}, "eval": {"img_size": 320}}}, path)


def test_predictor_runs_at_the_trained_size_unless_told(ckpt_256):
    p = Predictor(ckpt_256)
    assert p.img_size == 256
    x, _ = p.preprocess([np.zeros((90, 120, 3), np.uint8)])
    assert tuple(x.shape) == (1, 3, 256, 256)
    assert Predictor(ckpt_256, img_size=128).img_size == 128


def test_eval_runs_at_the_trained_size(ckpt_256, tmp_path, capsys):
    from detector.cli.eval import main
    out = tmp_path / "dets.json"
    assert main(["--weights", str(ckpt_256), "--workers", "0", "--max-images", "1", "--conf-thres", "0.3",
                 "--save-json", str(out)]) == 0
    assert "at 256" in capsys.readouterr().out
    assert json.loads((tmp_path / "dets_metrics.json").read_text())["img_size"] == 256


def test_demo_runs_at_the_trained_size(ckpt_256, tmp_path, caplog):
    from detector.cli import demo
    img = tmp_path / "a.jpg"
    cv2.imwrite(str(img), np.full((90, 120, 3), 80, np.uint8))
    with caplog.at_level(logging.INFO):
        stats = demo.run(demo.parse_args(["--weights", str(ckpt_256), "--source", str(img), "--no-show"]))
    assert stats["frames"] == 1 and "input 256" in caplog.text


def test_a_fixed_size_onnx_file_runs_at_its_size(ckpt_256, tmp_path):
    from detector.export.onnx_export import export_onnx
    p = Predictor(ckpt_256, fuse=False)
    onnx_path = export_onnx(p.model, tmp_path / "m160.onnx", 160, names=NAMES)
    assert Predictor(onnx_path).img_size == 160
    with pytest.raises(ConfigError, match="exported for 160x160"):
        Predictor(onnx_path, img_size=128)


# ------------------------------------------------------------------------ unreadable images
def test_unreadable_images_are_left_out_of_the_score_and_counted(broken_coco):
    """Ground truth fed back as detections scores AP 1 although two files cannot be decoded
    (a grey placeholder scored as an image would have its boxes counted as missed)."""
    ds = build_dataset(coco_cfg(broken_coco), "val", 64)
    ev = COCOEvaluator(ds.coco_gt(), ds.label_to_cat_id, ds.names)
    for batch in build_dataloader(ds, 4, workers=2, shuffle=False):
        preds = [{"boxes": t[:, 1:], "scores": torch.ones(len(t)), "labels": t[:, 0].long()}
                 for t in batch["targets"]]
        ev.update(preds, batch["meta"])
    m = ev.summarize()
    assert [Path(p).name for p in m["unreadable_images"]] == ["corrupt.jpg", "truncated.jpg"]
    assert m["num_images"] == len(ds) - 2
    assert m["AP"] > 0.99


def test_eval_tool_says_how_many_images_were_unreadable(broken_coco, tmp_path, capsys):
    from detector.cli.eval import main
    torch.manual_seed(0)
    model = build_model({"model": SMALL})
    ckpt = save_checkpoint({"model": model.state_dict(), "names": NAMES,
                            "config": {"model": model.config, "data": coco_cfg(broken_coco),
                                       "train": {"img_size": 64}}}, tmp_path / "m.pt")
    assert main(["--weights", str(ckpt), "--workers", "0", "--save-json", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    assert "2 unreadable image(s) left out of the score" in out and "corrupt.jpg" in out
    metrics = json.loads((tmp_path / "d_metrics.json").read_text())
    assert metrics["num_images"] == 6 and len(metrics["unreadable_images"]) == 2


# ------------------------------------------------------------------------ class names
def test_class_names_that_differ_are_an_error_unless_allowed(ckpt_256, data_root, tmp_path, capsys):
    import yaml
    from detector.cli.eval import main
    make_rect_coco(tmp_path / "yolo_like", n=1)
    (tmp_path / "yolo_like" / "labels" / "train").mkdir(parents=True)  # no labels: background images
    other = tmp_path / "other.yaml"  # same images, same count, other names (the JSON's own)
    cats = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}, {"id": 9, "name": "blue"}]
    ann = json.loads((data_root / "annotations" / "instances_train.json").read_text())
    ann["categories"] = cats
    (tmp_path / "renamed.json").write_text(json.dumps(ann))
    cfg = {"format": "coco", "root": str(data_root), "names": ["cat", "dog", "blue"],
           "val": {"images": "images/train", "annotations": str(tmp_path / "renamed.json")}}
    other.write_text(yaml.safe_dump(cfg))
    args = ["--weights", str(ckpt_256), "--data", str(other), "--workers", "0", "--size", "64",
            "--save-json", str(tmp_path / "d.json")]
    with pytest.raises(ConfigError) as e:
        main(args)
    assert "0: model 'red' / data 'cat'" in str(e.value) and "1: model 'green' / data 'dog'" in str(e.value)
    assert "--allow-name-mismatch" in str(e.value)
    assert main(args + ["--allow-name-mismatch"]) == 0
    assert "2 class names differ" in capsys.readouterr().out
    # another number of classes is refused even with the flag
    cfg2 = yolo_cfg(tmp_path / "yolo_like", names=("a", "b"))
    with pytest.raises(ConfigError, match="has 3 classes, the data"):
        main(["--weights", str(ckpt_256), "--data", str(_yaml(tmp_path, cfg2)), "--allow-name-mismatch"])


def _yaml(tmp_path, cfg):
    import yaml
    path = tmp_path / "cfg2.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
