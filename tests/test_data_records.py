"""The record store: a split's records as arrays hold exactly what the labels say."""
import json
import pickle

import numpy as np
import pytest

from detector.data import build_dataset
from detector.data.labels import scan_coco
from detector.data.records import ImageRecord, PackedStrings, RecordStore

from conftest import COCO128, DATA_CONFIGS, need_coco128
from rect_datasets import coco_cfg, make_rect_coco, rect_image, write_coco, write_rgb


def test_packed_strings_round_trip_any_path():
    names = ["a.jpg", "", "dossier/été 2024/ß.png", "x" * 300, "\udcff-undecodable.jpg"]
    packed = PackedStrings(names)
    assert len(packed) == 5 and list(packed) == names and packed[-1] == names[-1]
    with pytest.raises(IndexError):
        packed[5]


def test_store_round_trips_records_with_and_without_boxes():
    rng = np.random.default_rng(0)
    records = [ImageRecord(f"/d/{i}.jpg", 10 + i, rng.random((n, 4)).astype(np.float32),
                           rng.integers(0, 5, n), (30 + i, 40) if i % 2 else None, normalized=not i % 2)
               for i, n in enumerate([3, 0, 1, 0, 5])]
    store = RecordStore.from_records(records)
    assert len(store) == 5 and store.boxes.shape == (9, 4)
    for got, want in zip(store, records):
        assert (got.path, got.image_id, got.hw, got.normalized) == (want.path, want.image_id, want.hw, want.normalized)
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_array_equal(got.classes, want.classes)
    store[0].boxes[:] = -1  # a record is a copy: the store cannot be changed through it
    np.testing.assert_array_equal(store[0].boxes, records[0].boxes)
    again = pickle.loads(pickle.dumps(store))  # spawn-started workers get it pickled
    assert [r.path for r in again] == [r.path for r in records]
    assert RecordStore.from_records([]).boxes.shape == (0, 4)


def test_coco_scan_matches_the_json_image_by_image(tmp_path):
    root = make_rect_coco(tmp_path, n=4)
    ann_path = root / "annotations" / "instances_train.json"
    data = json.loads(ann_path.read_text())
    data["annotations"].append({"id": 99, "image_id": 2, "category_id": 7, "bbox": [1, 1, 10, 10],
                                "area": 100.0, "iscrowd": 1})
    ann_path.write_text(json.dumps(data))
    labels = scan_coco(str(ann_path), str(root / "images" / "train"))
    cat_to_label = {3: 0, 7: 1, 9: 2}
    for rec, im in zip(labels.records, data["images"]):
        anns = [a for a in data["annotations"] if a["image_id"] == im["id"] and not a["iscrowd"]]
        want = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                         for a in anns], np.float32)
        assert rec.image_id == im["id"] and rec.hw == (im["height"], im["width"]) and not rec.normalized
        np.testing.assert_allclose(rec.boxes, want)
        assert rec.classes.tolist() == [cat_to_label[a["category_id"]] for a in anns]
    gt = labels.gt.to_dict()
    assert len(gt["annotations"]) == len(data["annotations"])  # crowd box kept for evaluation
    crowd = [a for a in gt["annotations"] if a["iscrowd"]]
    assert crowd == [{"id": 99, "image_id": 2, "category_id": 7, "bbox": [1.0, 1.0, 10.0, 10.0],
                      "area": 100.0, "iscrowd": 1}]
    assert labels.report.crowd_boxes == 1
    assert [c["id"] for c in gt["categories"]] == [3, 7, 9]


def test_annotation_id_zero_is_renumbered_and_missing_area_computed(tmp_path):
    write_rgb(tmp_path / "images" / "train" / "a.png", rect_image(20, 20, [], []))
    write_coco(tmp_path, [("a.png", 20, 20)], [{"id": 0, "image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 5]},
                                                {"id": 1, "image_id": 1, "category_id": 9, "bbox": [2, 2, 3, 3]}])
    ds = build_dataset(coco_cfg(tmp_path), "val", 32)
    anns = ds.coco_gt().dataset["annotations"]
    assert [a["id"] for a in anns] == [1, 2] and [a["area"] for a in anns] == [20.0, 9.0]


def test_coco128_records_agree_with_a_plain_python_reading():
    need_coco128()
    ds = build_dataset(DATA_CONFIGS / "coco128.yaml", "train", 64)
    data = json.loads((COCO128 / "annotations" / "instances_train2017.json").read_text())
    n_boxes = sum(1 for a in data["annotations"] if not a.get("iscrowd", 0))
    assert len(ds.records) == len(data["images"]) and ds.records.boxes.shape[0] <= n_boxes
    by_id = {im["id"]: im for im in data["images"]}
    for rec in ds.records:
        assert rec.path.endswith(by_id[rec.image_id]["file_name"])
    assert ds.records.nbytes < 200_000  # a few arrays, not an object per box
