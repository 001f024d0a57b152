"""Bad input never stops training and never loses a label silently (issue item 5)."""
import io
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from detector.data import (AugmentConfig, ImageReadError, LabelError, build_dataloader,
                           build_dataset, read_image)
from detector.data.image_io import image_size

from rect_datasets import (coco_cfg, make_rect_coco, rect_image, write_coco,
                          write_rgb, write_yolo_label, yolo_cfg)
from test_data_augment import assert_boxes_on_their_colour


# ------------------------------------------------------------------------------ unreadable files
def test_unreadable_images_raise_read_errors(broken_coco):
    d = broken_coco / "images" / "train"
    for name, what in [("corrupt.jpg", "not a decodable"), ("truncated.jpg", "truncated"),
                       ("empty.jpg", "zero-byte"), ("missing.jpg", "not found")]:
        with pytest.raises(ImageReadError, match=what) as e:
            read_image(d / name)
        assert name in str(e.value)


def test_missing_and_empty_files_skipped_at_scan_and_logged(broken_coco, caplog):
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(coco_cfg(broken_coco), "train", 64)
    names = {Path(r.path).name for r in ds.records}
    assert "missing.jpg" not in names and "empty.jpg" not in names
    assert {"corrupt.jpg", "truncated.jpg"} <= names  # only found out when decoded
    assert "missing.jpg" in caplog.text and "empty.jpg" in caplog.text
    # ground truth of skipped files is not evaluated
    assert {104 - 1, 104 - 2} & set(ds.coco_gt().getImgIds()) == set()


@pytest.mark.parametrize("workers", [0, 2])
def test_training_epoch_survives_unreadable_images_and_counts_them(broken_coco, workers, caplog):
    ds = build_dataset(coco_cfg(broken_coco), "train", 64, augment=AugmentConfig(mosaic=0.5))
    loader = build_dataloader(ds, batch_size=4, workers=workers, shuffle=True, seed=0)
    with caplog.at_level(logging.WARNING):
        for epoch in range(2):
            n = 0
            for batch in loader:
                assert batch["images"].shape[1:] == (3, 64, 64)
                assert all(m["image_id"] < 100 for m in batch["meta"])  # replaced by good images
                n += len(batch["meta"])
            assert n == len(ds)
            assert [Path(p).name for p in loader.skipped_last_epoch] == ["corrupt.jpg", "truncated.jpg"]
    assert "2 unreadable image(s) skipped" in caplog.text
    if workers == 0:
        assert "corrupt.jpg" in caplog.text and "truncated.jpg" in caplog.text


def test_evaluation_keeps_the_image_id_of_an_unreadable_image(broken_coco):
    ds = build_dataset(coco_cfg(broken_coco), "val", 64)
    index = next(i for i, r in enumerate(ds.records) if r.path.endswith("corrupt.jpg"))
    item = ds[index]
    assert item["meta"]["image_id"] == 100 and item["meta"].get("unreadable")
    assert item["targets"].shape == (0, 5) and item["image"].shape == (3, 64, 64)
    assert item["skipped"] and item["skipped"][0].endswith("corrupt.jpg")


# ------------------------------------------------------------------------------ image formats
BOXES = [(10, 8, 40, 30), (60, 40, 90, 70)]
CLASSES = [0, 2]


def _png_bytes(arr, mode=None):
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG") if mode else Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_grayscale_rgba_palette_16bit_converted(tmp_path):
    rgb = rect_image(80, 100, BOXES, CLASSES)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    # grayscale -> 3 equal channels
    (tmp_path / "g.png").write_bytes(_png_bytes(gray))
    out = read_image(tmp_path / "g.png")
    assert out.shape == (80, 100, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], gray) and np.array_equal(out[..., 1], gray)
    # RGBA: opaque pixels keep their colour, transparent ones become the grey padding colour
    rgba = np.dstack([rgb, np.full((80, 100), 255, np.uint8)])
    rgba[:5, :5, 3] = 0
    (tmp_path / "a.png").write_bytes(_png_bytes(rgba))
    out = read_image(tmp_path / "a.png")
    assert np.array_equal(out[10:, 10:], rgb[10:, 10:]) and (out[:5, :5] == 114).all()
    # palette
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8).save(tmp_path / "p.png")
    out = read_image(tmp_path / "p.png")
    assert out.shape == (80, 100, 3) and np.abs(out.astype(int) - rgb).max() < 20
    # 16-bit colour (OpenCV writes BGR) and 16-bit grey
    cv2.imwrite(str(tmp_path / "c16.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    assert np.array_equal(read_image(tmp_path / "c16.png"), rgb)
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    assert np.array_equal(read_image(tmp_path / "g16.png")[..., 2], gray)


def _exif_jpeg(path, displayed, orientation=6):
    """Store pixels so that a viewer applying the EXIF orientation shows ``displayed``."""
    stored = {6: np.rot90(displayed, 1), 8: np.rot90(displayed, -1), 3: displayed[::-1, ::-1]}[orientation]
    im = Image.fromarray(np.ascontiguousarray(stored))
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, "JPEG", quality=95, exif=exif.tobytes())
    return path


def test_exif_rotation_applied_for_yolo_labels(tmp_path):
    """YOLO labels (normalised) refer to the image as displayed, as in Ultralytics/OpenCV."""
    displayed = rect_image(80, 120, BOXES, CLASSES)
    (tmp_path / "images" / "train").mkdir(parents=True)
    _exif_jpeg(tmp_path / "images" / "train" / "r.jpg", displayed)
    h, w = displayed.shape[:2]
    write_yolo_label(tmp_path / "labels" / "train" / "r.txt",
                     [(c, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)
                      for (x1, y1, x2, y2), c in zip(BOXES, CLASSES)])
    assert image_size(tmp_path / "images" / "train" / "r.jpg") == (80, 120)
    ds = build_dataset(yolo_cfg(tmp_path), "val", 128)
    item = ds[0]
    assert item["meta"]["orig_shape"] == (80, 120)
    assert_boxes_on_their_colour(item["image"], item["targets"])
    gt = ds.coco_gt()
    assert gt.imgs[0]["height"] == 80 and gt.imgs[0]["width"] == 120


def test_exif_rotation_for_coco_follows_the_json_frame(tmp_path):
    """COCO records width/height: a JSON made on the displayed (rotated) frame gets the rotated
    image; a JSON whose size is the raw frame (annotated without EXIF) gets the raw pixels."""
    displayed = rect_image(80, 120, BOXES, CLASSES)
    (tmp_path / "images" / "train").mkdir(parents=True)
    path = _exif_jpeg(tmp_path / "images" / "train" / "r.jpg", displayed)
    anns = [{"id": k + 1, "image_id": 1, "category_id": [3, 7, 9][c], "bbox": [x1, y1, x2 - x1, y2 - y1],
             "area": 1.0, "iscrowd": 0} for k, ((x1, y1, x2, y2), c) in enumerate(zip(BOXES, CLASSES))]
    write_coco(tmp_path, [("r.jpg", 80, 120)], anns)
    item = build_dataset(coco_cfg(tmp_path), "val", 128)[0]
    assert item["meta"]["orig_shape"] == (80, 120)
    assert_boxes_on_their_colour(item["image"], item["targets"])
    assert read_image(path, expected_hw=(120, 80)).shape == (120, 80, 3)  # raw frame kept
    assert read_image(path).shape == (80, 120, 3)


# ------------------------------------------------------------------------------ bad boxes
def test_coco_boxes_clipped_and_bad_ones_dropped_with_warning(tmp_path, caplog):
    write_rgb(tmp_path / "images" / "train" / "a.png", rect_image(100, 100, [], []))
    bad = {"zero": [10, 10, 0, 20], "negative": [50, 50, -5, 10], "nan": [float("nan"), 1, 5, 5],
           "outside": [150, 150, 10, 10]}
    anns = [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [-10, 80, 40, 40], "area": 1.0, "iscrowd": 0}]
    for k, box in enumerate(bad.values()):
        anns.append({"id": 10 + k, "image_id": 1, "category_id": 7, "bbox": box, "area": 1.0, "iscrowd": 0})
    write_coco(tmp_path, [("a.png", 100, 100)], anns)
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(coco_cfg(tmp_path), "train", 100)
    rec = ds.records[0]
    np.testing.assert_allclose(rec.boxes, [[0, 80, 30, 100]])  # clipped
    assert rec.classes.tolist() == [0]
    assert "4 boxes dropped" in caplog.text and "1 boxes clipped" in caplog.text
    for k in range(4):
        assert f"annotation id {10 + k}" in caplog.text
    assert len(ds.coco_gt().dataset["annotations"]) == 1


def test_yolo_boxes_clipped_and_bad_ones_dropped(tmp_path, caplog):
    write_rgb(tmp_path / "images" / "train" / "a.png", rect_image(50, 50, [], []))
    write_yolo_label(tmp_path / "labels" / "train" / "a.txt",
                     [(0, 0.9, 0.5, 0.4, 0.2), (1, 0.5, 0.5, 0.0, 0.2), (2, "nan", 0.5, 0.1, 0.1),
                      (1, 0.5, 0.5, -0.2, 0.1), (2, 0.5, 0.5, 0.2, 0.2)])
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(yolo_cfg(tmp_path), "train", 64)
    rec = ds.records[0]
    np.testing.assert_allclose(rec.boxes, [[0.7, 0.4, 1.0, 0.6], [0.4, 0.4, 0.6, 0.6]], atol=1e-6)
    assert rec.classes.tolist() == [0, 2]
    assert "3 boxes dropped" in caplog.text and "a.txt line 3" in caplog.text


# ------------------------------------------------------------------------------ unknown ids
def test_unknown_coco_category_is_an_error_naming_file_and_id(tmp_path):
    write_rgb(tmp_path / "images" / "train" / "a.png", rect_image(20, 20, [], []))
    write_coco(tmp_path, [("a.png", 20, 20)], [{"id": 5, "image_id": 1, "category_id": 42,
                                                  "bbox": [1, 1, 5, 5], "area": 25.0, "iscrowd": 0}])
    with pytest.raises(LabelError) as e:
        build_dataset(coco_cfg(tmp_path), "train", 32)
    msg = str(e.value)
    assert "instances_train.json" in msg and "category id 42" in msg and "a.png" in msg


@pytest.mark.parametrize("bad", ["5", "-1", "1.5", "x"])
def test_unknown_yolo_class_is_an_error_naming_file_and_index(tmp_path, bad):
    write_rgb(tmp_path / "images" / "train" / "a.png", rect_image(20, 20, [], []))
    write_yolo_label(tmp_path / "labels" / "train" / "a.txt", [(0, 0.5, 0.5, 0.1, 0.1), (bad, 0.5, 0.5, 0.2, 0.2)])
    with pytest.raises(LabelError) as e:
        build_dataset(yolo_cfg(tmp_path), "train", 32)
    assert "a.txt line 2" in str(e.value) and bad in str(e.value)


def test_names_that_disagree_with_the_coco_json_are_an_error(tmp_path):
    make_rect_coco(tmp_path, n=1)
    with pytest.raises(LabelError, match="class names differ"):
        build_dataset(coco_cfg(tmp_path, names=("red", "blue", "green")), "train", 32)


# ------------------------------------------------------------------------------ orphans
def test_label_without_image_and_image_without_labels(tmp_path, caplog):
    write_rgb(tmp_path / "images" / "train" / "bg.png", rect_image(40, 40, [], []))
    write_rgb(tmp_path / "images" / "train" / "obj.png", rect_image(40, 40, [(5, 5, 20, 20)], [1]))
    write_yolo_label(tmp_path / "labels" / "train" / "obj.txt", [(1, 0.3125, 0.3125, 0.375, 0.375)])
    write_yolo_label(tmp_path / "labels" / "train" / "orphan.txt", [(0, 0.5, 0.5, 0.2, 0.2)])
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(yolo_cfg(tmp_path), "train", 64)
    assert [Path(r.path).name for r in ds.records] == ["bg.png", "obj.png"]
    assert ds[0]["targets"].shape == (0, 5)  # background kept
    assert ds[1]["targets"].shape == (1, 5)
    assert "orphan.txt" in caplog.text and "without an image" in caplog.text


# ------------------------------------------------------------------------------ check_data
def _check_data_main():
    from detector.cli.check_data import main
    return main


def test_check_data_reports_every_problem(broken_coco, tmp_path, capsys):
    import yaml
    main = _check_data_main()
    cfg_path = tmp_path / "bad.yaml"
    cfg_path.write_text(yaml.safe_dump(coco_cfg(broken_coco)))
    assert main(["--data", str(cfg_path), "--split", "train"]) == 1
    out = capsys.readouterr().out
    for name in ("corrupt.jpg", "truncated.jpg", "empty.jpg", "missing.jpg"):
        assert name in out
    assert "PROBLEMS" in out


def test_check_data_passes_a_clean_dataset(tmp_path, capsys):
    import yaml
    main = _check_data_main()
    make_rect_coco(tmp_path, n=2)
    cfg_path = tmp_path / "ok.yaml"
    cfg_path.write_text(yaml.safe_dump(coco_cfg(tmp_path)))
    assert main(["--data", str(cfg_path)]) == 0
    assert "OK" in capsys.readouterr().out


def test_exif_fast_path_agrees_with_pil(tmp_path):
    """JPEGs without an EXIF block skip PIL; with one (after other header segments) PIL reads it."""
    import io as _io

    from PIL import Image

    from detector.data.image_io import _jpeg_without_exif, exif_orientation
    img = Image.fromarray(np.zeros((16, 24, 3), np.uint8))
    plain, rotated = _io.BytesIO(), _io.BytesIO()
    img.save(plain, "JPEG")
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(rotated, "JPEG", exif=exif.tobytes(), icc_profile=b"\0" * 300)
    assert _jpeg_without_exif(plain.getvalue()) and exif_orientation(plain.getvalue()) == 1
    assert not _jpeg_without_exif(rotated.getvalue()) and exif_orientation(rotated.getvalue()) == 6
    assert not _jpeg_without_exif(b"\x89PNG\r\n\x1a\n")   # not a JPEG: PIL decides


def test_check_split_lists_unknown_coco_categories_with_the_other_problems(broken_coco):
    """strict=False: the fatal label problems do not hide the rest of the split's report."""
    from detector.data.check import check_split, format_check
    ann_path = broken_coco / "annotations" / "instances_train.json"
    data = json.loads(ann_path.read_text())
    data["annotations"][0]["category_id"] = 42
    data["annotations"][5]["category_id"] = 43
    ann_path.write_text(json.dumps(data))
    res = check_split(coco_cfg(broken_coco), "train", progress=False)
    text = format_check(res)
    assert not res.ok and "category id 42" in text and "category id 43" in text
    for name in ("corrupt.jpg", "truncated.jpg", "empty.jpg", "missing.jpg"):
        assert name in text
