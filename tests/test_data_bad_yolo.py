"""Bad data in the YOLO layout (images/ + labels/ folders) never crashes a run and is reported
whole: every malformed line, every unknown class id with its file, every unreadable image."""
import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from detector.data import AugmentConfig, LabelError, build_dataloader, build_dataset
from detector.data.check import check_split

from conftest import REPO
from rect_datasets import coco_cfg, rect_image, write_coco, write_rgb, write_yolo_label, yolo_cfg

BOX = (0, 0.5, 0.5, 0.4, 0.4)


def _yolo_row(box, cls, h=60, w=80):
    x1, y1, x2, y2 = box
    return (cls, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)


def make_broken_yolo(root: Path, unknown: bool = True) -> Path:
    """A real YOLO layout with good images and every kind of broken file and label line."""
    img_dir, lab_dir = root / "images" / "train", root / "labels" / "train"
    boxes, classes = [(5, 5, 30, 25), (40, 30, 70, 55)], [0, 2]
    for i in range(4):
        write_rgb(img_dir / f"good{i}.jpg", rect_image(60, 80, boxes, classes))
        write_yolo_label(lab_dir / f"good{i}.txt", [_yolo_row(b, c) for b, c in zip(boxes, classes)])
    # malformed lines: the image keeps its two good boxes
    write_rgb(img_dir / "mixed.jpg", rect_image(60, 80, boxes, classes))
    rows = [_yolo_row(boxes[0], 0), (0, 0.5, 0.5), (1, 0.3, "abc", 0.1, 0.1),
            (1, 0.5, 0.5, 0.1, 0.1, 0.2), _yolo_row(boxes[1], 2)]
    write_yolo_label(lab_dir / "mixed.txt", rows)
    write_rgb(img_dir / "short.jpg", rect_image(60, 80, [], []))
    write_yolo_label(lab_dir / "short.txt", [(2, 0.5)])
    # bad boxes: dropped with plain numbers in the message
    write_rgb(img_dir / "badbox.jpg", rect_image(60, 80, [], []))
    write_yolo_label(lab_dir / "badbox.txt", [(0, 0.5, 0.5, 0.0, 0.1), (1, "nan", 0.5, 0.1, 0.1), BOX])
    # unreadable images
    (img_dir / "text.jpg").write_text("this is not a jpeg\n" * 10)
    write_yolo_label(lab_dir / "text.txt", [BOX])
    ok, enc = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    (img_dir / "truncated.jpg").write_bytes(enc.tobytes()[: len(enc) // 2])
    write_yolo_label(lab_dir / "truncated.txt", [BOX])
    (img_dir / "empty.jpg").write_bytes(b"")
    # odd but readable images
    Image.fromarray(rect_image(60, 80, boxes, classes)[..., 0]).save(img_dir / "grey.png")
    Image.fromarray(np.dstack([rect_image(60, 80, boxes, classes), np.full((60, 80), 255, np.uint8)])
                    ).save(img_dir / "rgba.png")
    Image.fromarray(rect_image(60, 80, boxes, classes)).convert("P").save(img_dir / "palette.png")
    # a label file without an image
    write_yolo_label(lab_dir / "orphan.txt", [BOX])
    if unknown:  # class ids the data config does not have (3 names): fatal
        for name, cls in [("cls7", 7), ("neg", -1), ("word", "person")]:
            write_rgb(img_dir / f"{name}.jpg", rect_image(60, 80, [], []))
            write_yolo_label(lab_dir / f"{name}.txt", [BOX, (cls, 0.5, 0.5, 0.2, 0.2)])
    return root


def test_check_data_reports_every_problem_of_a_yolo_split_in_one_pass(tmp_path, capsys):
    from detector.cli.check_data import main
    root = make_broken_yolo(tmp_path / "data")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(yolo_cfg(root)))
    assert main(["--data", str(cfg), "--split", "train"]) == 1
    out = capsys.readouterr().out
    assert "ERROR (training would stop here)" in out
    for needle in ("cls7.txt line 2 class '7'", "neg.txt line 2 class '-1'", "word.txt line 2 class 'person'",
                   "mixed.txt line 2", "mixed.txt line 3", "mixed.txt line 4", "short.txt line 1",
                   "text.jpg", "truncated.jpg", "empty.jpg", "orphan.txt", "badbox.txt line 1",
                   "badbox.txt line 2"):
        assert needle in out, needle
    assert "malformed label lines (skipped; the image keeps its other boxes): 4" in out
    assert "np.float" not in out and "[0.5, 0.45, 0.5, 0.55]" in out  # plain numbers
    assert "grayscale" in out and "palette" in out


def test_check_split_lists_all_malformed_lines_beyond_the_display_limit(tmp_path):
    root = tmp_path / "data"
    write_rgb(root / "images" / "train" / "a.jpg", rect_image(60, 80, [], []))
    write_yolo_label(root / "labels" / "train" / "a.txt", [(0, 0.5, 0.5)] * 30 + [BOX])
    res = check_split(yolo_cfg(root), "train", progress=False)
    assert len(res.report.malformed_lines) == 30 and res.report.boxes == 1 and not res.ok
    from detector.data.check import format_check
    text = format_check(res, limit=5)
    assert all(f"a.txt line {k}:" in text for k in range(1, 31))


def test_unknown_class_ids_are_one_error_naming_every_file(tmp_path):
    root = make_broken_yolo(tmp_path / "data")
    with pytest.raises(LabelError) as e:
        build_dataset(yolo_cfg(root), "train", 64)
    msg = str(e.value)
    for needle in ("cls7.txt line 2 class '7'", "neg.txt line 2 class '-1'", "word.txt line 2 class 'person'",
                   "3 classes"):
        assert needle in msg, needle


@pytest.mark.parametrize("workers", [2])
def test_malformed_lines_are_a_counted_skip_and_training_goes_on(tmp_path, caplog, workers):
    root = make_broken_yolo(tmp_path / "data", unknown=False)
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(yolo_cfg(root), "train", 64, augment=AugmentConfig(mosaic=0.5))
    assert "4 malformed label lines (skipped)" in caplog.text and "mixed.txt line 2" in caplog.text
    by_name = {Path(r.path).name: r for r in ds.records}
    assert by_name["mixed.jpg"].classes.tolist() == [0, 2]  # its other boxes kept
    assert by_name["badbox.jpg"].classes.tolist() == [0]
    assert "empty.jpg" not in by_name
    loader = build_dataloader(ds, batch_size=4, workers=workers, shuffle=True, seed=0)
    seen = 0
    for batch in loader:
        assert batch["images"].shape[1:] == (3, 64, 64)
        seen += len(batch["meta"])
    assert seen == len(ds)
    assert sorted(Path(p).name for p in loader.skipped_last_epoch) == ["text.jpg", "truncated.jpg"]


def test_evaluation_dataset_of_a_broken_yolo_split_loads(tmp_path):
    root = make_broken_yolo(tmp_path / "data", unknown=False)
    ds = build_dataset(yolo_cfg(root), "val", 64)
    gt = ds.coco_gt()  # unreadable images are left out of the ground truth
    names = {Path(im["file_name"]).name for im in gt.dataset["images"]}
    assert "text.jpg" not in names and "mixed.jpg" in names


# ----------------------------------------------------------------------------- COCO: fatal ones
def test_every_unknown_coco_category_is_named_in_one_error(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        write_rgb(tmp_path / "images" / "train" / name, rect_image(20, 20, [], []))
    anns = [{"id": 1, "image_id": 1, "category_id": 42, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5]},
            {"id": 3, "image_id": 3, "category_id": 99, "bbox": [1, 1, 5, 5]},
            {"id": 4, "image_id": 8, "category_id": 3, "bbox": [1, 1, 5, 5]}]
    write_coco(tmp_path, [("a.png", 20, 20), ("b.png", 20, 20), ("c.png", 20, 20)], anns)
    with pytest.raises(LabelError) as e:
        build_dataset(coco_cfg(tmp_path), "train", 32)
    msg = str(e.value)
    assert "a.png: annotation id 1 category id 42" in msg and "c.png: annotation id 3 category id 99" in msg
    assert "b.png" not in msg and "image ids [8]" in msg


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"images": []}'])
def test_a_broken_coco_json_is_a_label_error(tmp_path, content):
    (tmp_path / "images" / "train").mkdir(parents=True)
    ann = tmp_path / "annotations" / "instances_train.json"
    ann.parent.mkdir()
    ann.write_text(content)
    with pytest.raises(LabelError, match="instances_train.json"):
        build_dataset(coco_cfg(tmp_path), "train", 32)


def test_cli_turns_an_unknown_class_into_one_message_and_exit_status(tmp_path):
    root = make_broken_yolo(tmp_path / "data")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(yolo_cfg(root)))
    proc = subprocess.run([sys.executable, "-m", "detector.cli", "visualize-data", "--data", str(cfg),
                           "--num", "2", "--out", str(tmp_path / "g.png")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "cls7.txt line 2 class '7'" in proc.stderr


def test_a_missing_labels_folder_is_a_clear_error_not_an_unlabelled_run(tmp_path):
    from detector.data import DatasetNotFoundError
    write_rgb(tmp_path / "images" / "train" / "a.jpg", rect_image(20, 20, [], []))
    with pytest.raises(DatasetNotFoundError, match="labels folder not found"):
        build_dataset(yolo_cfg(tmp_path), "train", 32)
