"""Pascal VOC data as users bring it: the VOCdevkit and flat layouts, the quirks of real XMLs,
difficult objects as ignore regions, check-data, conversion to and from COCO / YOLO, and the
shared BCCD set scored by pycocotools exactly as its COCO JSON form."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detector.config import ConfigError
from detector.data import LabelError, build_dataloader, build_dataset, load_data_config, scan_split
from detector.data.convert import convert_dataset
from detector.evaluation import COCOEvaluator

ROOT = Path(__file__).resolve().parents[1]
BCCD = ROOT.parent / "shared" / "data" / "bccd"
NAMES = ["cat", "dog"]


def xml_text(filename, objects, size=(64, 48)):
    """A VOC XML; objects = (name, xmin, ymin, xmax, ymax[, difficult]); size None = no <size>."""
    size_xml = "" if size is None else (f"<size><width>{size[0]}</width><height>{size[1]}</height>"
                                        f"<depth>3</depth></size>")
    objs = "".join(
        f"<object><name>{o[0]}</name><difficult>{o[5] if len(o) > 5 else 0}</difficult><bndbox>"
        f"<xmin>{o[1]}</xmin><ymin>{o[2]}</ymin><xmax>{o[3]}</xmax><ymax>{o[4]}</ymax></bndbox></object>"
        for o in objects)
    return f"<annotation><folder>x</folder><filename>{filename}</filename>{size_xml}{objs}</annotation>"


def write_image(path, h=48, w=64, ext=".jpg"):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(ext, np.full((h, w, 3), 120, np.uint8))
    path.write_bytes(data.tobytes())


def make_devkit(root: Path, items, lists):
    """items: id -> (xml text or None, image spec: None = no image, ".png" = PNG bytes, or
    (h, w)); lists: split -> ids."""
    for stem, (xml, image) in items.items():
        if xml is not None:
            (root / "Annotations").mkdir(parents=True, exist_ok=True)
            (root / "Annotations" / f"{stem}.xml").write_text(xml)
        if image is not None:
            h, w = image if isinstance(image, tuple) else (48, 64)
            write_image(root / "JPEGImages" / f"{stem}.jpg", h, w, image if isinstance(image, str) else ".jpg")
    for split, ids in lists.items():
        (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(i + "\n" for i in ids))
    return {"format": "voc", "root": str(root), "names": NAMES,
            **{s: f"ImageSets/Main/{s}.txt" for s in lists}}


@pytest.fixture
def quirky(tmp_path):
    """A VOCdevkit split holding each quirk real XMLs have, one image each."""
    items = {
        "plain": (xml_text("plain.jpg", [("cat", 1, 1, 10, 20), ("dog", 20, 5, 40, 30)]), (48, 64)),
        "hard": (xml_text("hard.jpg", [("cat", 5, 5, 15, 15), ("dog", 30, 10, 50, 40, 1)]), (48, 64)),
        "nosize": (xml_text("nosize.jpg", [("cat", 2, 2, 12, 12)], size=None), (48, 64)),
        "zerosize": (xml_text("zerosize.jpg", [("cat", 2, 2, 12, 12)], size=(0, 0)), (48, 64)),
        "wrongsize": (xml_text("wrongsize.jpg", [("dog", 50, 40, 90, 70)], size=(64, 48)), (80, 100)),
        "renamed": (xml_text("IMG_0001.JPG", [("dog", 3, 3, 9, 9)]), (48, 64)),
        "pngbytes": (xml_text("pngbytes.jpg", [("cat", 4, 4, 14, 14)]), ".png"),
        "noimage": (xml_text("noimage.jpg", [("cat", 4, 4, 14, 14)]), None),
        "noxml": (None, (48, 64)),
        "outside": (xml_text("outside.jpg", [("cat", 50, 30, 90, 70)]), (48, 64)),
        "degenerate": (xml_text("degenerate.jpg", [("cat", 7, 7, 7, 7), ("dog", 1, 1, 5, 5)]), (48, 64)),
        "broken": ("<annotation><object>", (48, 64)),
    }
    cfg = make_devkit(tmp_path / "VOC", items, {"train": list(items)})
    return cfg, tmp_path / "VOC"


def test_devkit_quirks_are_read_and_reported(quirky):
    cfg, root = quirky
    records, names, cat_ids, gt, report = scan_split(cfg, "train")
    assert names == NAMES and cat_ids == [1, 2]
    by_name = {Path(r.path).stem: r for r in records}
    # 1-based inclusive corners -> continuous [xmin - 1, xmax]
    np.testing.assert_allclose(by_name["plain"].boxes, [[0, 0, 10, 20], [19, 4, 40, 30]])
    assert list(by_name["plain"].classes) == [0, 1]
    # difficult: not a training target, an ignore (crowd) region in the ground truth
    assert len(by_name["hard"].boxes) == 1 and report.difficult_boxes == 1
    hard_id = by_name["hard"].image_id
    crowd = [a for a in gt.to_dict()["annotations"] if a["image_id"] == hard_id and a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["category_id"] == 2
    # the decoded image's size is what boxes are clipped against, and each case is noted
    assert tuple(by_name["wrongsize"].hw) == (80, 100)
    np.testing.assert_allclose(by_name["wrongsize"].boxes, [[49, 39, 90, 70]])
    notes = "\n".join(report.notes)
    for expected in ("nosize.xml: no <size>", "zerosize.xml: <size> 0x0", "wrongsize.xml: <size> 64x48",
                     "<filename> IMG_0001.JPG differs", "PNG data under a .jpg name",
                     "noxml.jpg: no XML (kept as a background image)"):
        assert expected in notes
    assert "noxml.jpg" in report.background_images and len(by_name["noxml"].boxes) == 0
    assert any("noimage" in m for m in report.missing_images) and "noimage" not in by_name
    assert any("broken.xml" in u for u in report.unreadable_labels) and "broken" not in by_name
    np.testing.assert_allclose(by_name["outside"].boxes, [[49, 29, 64, 48]])
    assert any("outside.xml" in c for c in report.clipped_boxes)
    assert [d for d in report.dropped_boxes if "degenerate.xml" in d and "zero or negative" in d]
    assert len(by_name["degenerate"].boxes) == 1


def test_difficult_can_be_trained_on(quirky):
    cfg, _ = quirky
    records, *_ = scan_split({**cfg, "difficult": "train"}, "train")
    hard = [r for r in records if Path(r.path).stem == "hard"][0]
    assert len(hard.boxes) == 2
    with pytest.raises(ConfigError, match="data.difficult"):
        load_data_config({**cfg, "difficult": "yes"})


def test_unknown_class_names_every_file_and_class(tmp_path):
    items = {"a": (xml_text("a.jpg", [("cat", 1, 1, 9, 9), ("bird", 2, 2, 8, 8)]), (48, 64)),
             "b": (xml_text("b.jpg", [("horse", 1, 1, 9, 9)]), (48, 64))}
    cfg = make_devkit(tmp_path, items, {"train": ["a", "b"]})
    with pytest.raises(LabelError) as e:
        scan_split(cfg, "train")
    assert "a.xml: bird" in str(e.value) and "b.xml: horse" in str(e.value)


def test_names_collected_from_every_split_when_the_yaml_lists_none(tmp_path, caplog):
    items = {"a": (xml_text("a.jpg", [("zebra", 1, 1, 9, 9)]), (48, 64)),
             "b": (xml_text("b.jpg", [("ant", 1, 1, 9, 9)]), (48, 64))}
    cfg = make_devkit(tmp_path, items, {"train": ["a"], "val": ["b"]})
    del cfg["names"]
    with caplog.at_level("INFO"):
        train = build_dataset(cfg, "train", 64)
    val = build_dataset(cfg, "val", 64)
    assert train.names == val.names == ["ant", "zebra"]          # same indices in every split
    assert train.records[0].classes.tolist() == [1]
    assert "classes found in the XMLs" in caplog.text


def test_flat_folder_images_and_xmls_side_by_side(tmp_path):
    flat = tmp_path / "labelimg"
    write_image(flat / "one.jpg")
    (flat / "one.xml").write_text(xml_text("one.jpg", [("dog", 11, 11, 30, 30)]))
    write_image(flat / "two.png", ext=".png")                     # no XML: background
    (flat / "orphan.xml").write_text(xml_text("gone.jpg", [("cat", 1, 1, 5, 5)]))
    cfg = {"format": "voc", "root": str(tmp_path), "names": NAMES, "train": "labelimg", "val": "labelimg"}
    records, _, _, _, report = scan_split(cfg, "train")
    assert sorted(Path(r.path).name for r in records) == ["one.jpg", "two.png"]
    assert str(flat / "orphan.xml") in report.labels_without_image
    ds = build_dataset(cfg, "val", 64)
    assert len(ds.coco_gt().getAnnIds()) == 1


def test_check_data_lists_every_voc_problem_in_one_pass(quirky, tmp_path):
    cfg, root = quirky
    import yaml
    data_yaml = tmp_path / "voc.yaml"
    data_yaml.write_text(yaml.safe_dump({**cfg, "val": cfg["train"]}))
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "check_data.py"), "--data", str(data_yaml),
                          "--split", "train"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    for expected in ("broken.xml", "noimage", "degenerate.xml", "outside.xml", "no <size>",
                     "PNG data under a .jpg name", "difficult boxes (ignore regions in eval): 1"):
        assert expected in out.stdout, expected


def _perturbed_detections(batch):
    """Deterministic, imperfect detections from a batch's targets: boxes shifted by a few
    pixels depending on their coordinates, every fourth box missed, one false positive per
    image, scores spread; the same boxes give the same detections in any layout."""
    preds = []
    for t in batch["targets"]:
        boxes, labels = t[:, 1:].clone(), t[:, 0].long()
        shift = (boxes[:, :1] % 5) - 2
        boxes += shift
        keep = (boxes[:, 0].round() % 4) != 0
        boxes, labels = boxes[keep], labels[keep]
        scores = 0.3 + 0.7 * ((boxes[:, 1] % 10) / 10)
        boxes = torch.cat([boxes, torch.tensor([[1.0, 1.0, 30.0, 30.0]])])
        preds.append({"boxes": boxes, "scores": torch.cat([scores, torch.tensor([0.9])]),
                      "labels": torch.cat([labels, torch.tensor([0])])})
    return preds


def _score(data_cfg, split, size=320):
    ds = build_dataset(data_cfg, split, size)
    ev = COCOEvaluator(ds.coco_gt(), ds.label_to_cat_id, ds.names)
    for batch in build_dataloader(ds, 16, workers=0, shuffle=False):
        ev.update(_perturbed_detections(batch), batch["meta"])
    return ev.summarize()


@pytest.mark.skipif(not BCCD.is_dir(), reason="shared BCCD data not found")
def test_bccd_reads_as_published_and_scores_as_its_coco_form(tmp_path):
    cfg = load_data_config(ROOT / "configs" / "data" / "bccd.yaml")
    sizes = {s: scan_split(cfg, s)[0] for s in ("train", "val", "test")}
    assert {s: len(r) for s, r in sizes.items()} == {"train": 205, "val": 87, "test": 72}
    # 4,888 boxes, two of them zero-size (dropped and reported)
    assert sum(len(r.boxes) for r in sizes.values()) == 4886
    coco = convert_dataset(cfg, "coco", tmp_path / "coco", ["test"])
    voc_metrics, coco_metrics = _score(cfg, "test"), _score(coco.data_yaml, "test")
    for key in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert voc_metrics[key] == pytest.approx(coco_metrics[key], abs=1e-12), key
    assert 0.2 < voc_metrics["AP"] < 0.95          # the perturbation is scored, not perfect


def test_difficult_is_neither_a_miss_nor_a_false_positive(tmp_path):
    items = {"a": (xml_text("a.jpg", [("cat", 5, 5, 25, 25), ("dog", 30, 10, 60, 40, 1)]), (48, 64))}
    cfg = make_devkit(tmp_path, items, {"val": ["a"]})
    ds = build_dataset(cfg, "val", 64)
    meta = ds[0]["meta"]
    for extra in ([], [[29.0, 9.0, 60.0, 40.0]]):          # the difficult dog found, or not
        ev = COCOEvaluator(ds.coco_gt(), ds.label_to_cat_id, ds.names)
        boxes = torch.tensor([[4.0, 4.0, 25.0, 25.0]] + extra) * meta["ratio"]
        boxes[:, [0, 2]] += meta["pad"][0]
        boxes[:, [1, 3]] += meta["pad"][1]
        ev.update([{"boxes": boxes, "scores": torch.tensor([0.9] * len(boxes)),
                    "labels": torch.tensor([0] + [1] * len(extra))}], [meta])
        m = ev.summarize()
        assert m["AP50"] == pytest.approx(1.0)


def _boxes_by_name(data_cfg, split):
    ds = build_dataset(data_cfg, split, 64)
    gt = ds.coco_gt()
    out = {}
    for img in gt.dataset["images"]:
        anns = gt.loadAnns(gt.getAnnIds(imgIds=[img["id"]], iscrowd=None))
        name = Path(img["file_name"]).stem
        out[name] = sorted((ds.names[ds.label_to_cat_id.index(a["category_id"])], a["iscrowd"] if
                            "iscrowd" in a else 0, *a["bbox"]) for a in anns)
    return out


def test_convert_round_trip_voc_coco_yolo_voc(tmp_path):
    items = {"a": (xml_text("a.jpg", [("cat", 1, 1, 10, 20), ("dog", 20.5, 5, 40, 30.25)]), (48, 64)),
             "b": (xml_text("b.jpg", [("dog", 3, 3, 60, 44), ("cat", 5, 5, 9, 9, 1)]), (48, 64)),
             "c": (xml_text("c.jpg", []), (48, 64))}
    cfg = make_devkit(tmp_path / "src", items, {"train": ["a", "b"], "val": ["c"]})
    original = _boxes_by_name(cfg, "train")
    coco = convert_dataset(load_data_config(cfg), "coco", tmp_path / "coco")
    yolo = convert_dataset(load_data_config(coco.data_yaml), "yolo", tmp_path / "yolo")
    back = convert_dataset(load_data_config(yolo.data_yaml), "voc", tmp_path / "voc")
    assert yolo.left_out == {"train": 1, "val": 0}          # the difficult cat: no YOLO form
    via_coco = _boxes_by_name(coco.data_yaml, "train")
    assert via_coco == original                             # difficult kept as iscrowd
    final = _boxes_by_name(back.data_yaml, "train")
    without_difficult = {k: [b for b in v if not b[1]] for k, v in original.items()}
    assert final.keys() == without_difficult.keys()
    for name in final:
        assert len(final[name]) == len(without_difficult[name])
        for got, want in zip(final[name], without_difficult[name]):
            assert got[0] == want[0]
            np.testing.assert_allclose(got[2:], want[2:], atol=0.5)
    assert (tmp_path / "voc" / "ImageSets" / "Main" / "val.txt").read_text().split() == ["c"]


def test_convert_cli_refuses_a_full_folder_and_converts(tmp_path):
    items = {"a": (xml_text("a.jpg", [("cat", 1, 1, 10, 20)]), (48, 64))}
    cfg = make_devkit(tmp_path / "src", items, {"train": ["a"]})
    import yaml
    data_yaml = tmp_path / "src.yaml"
    data_yaml.write_text(yaml.safe_dump(cfg))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    tool = [sys.executable, str(ROOT / "tools" / "convert.py"), "--data", str(data_yaml), "--to", "yolo"]
    out = subprocess.run(tool + [str(tmp_path / "full")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "not empty" in out.stderr
    out = subprocess.run(tool + [str(tmp_path / "new")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "new" / "labels" / "train" / "a.txt").read_text().startswith("0 ")


def test_split_names_are_checked():
    cfg = load_data_config({"format": "voc", "names": NAMES, "train": "ImageSets/Main/train.txt"})
    assert cfg.train.images.endswith("JPEGImages") and cfg.train.annotations.endswith("Annotations")
    with pytest.raises(ConfigError, match="split must be one of"):
        cfg.split("tset")
    with pytest.raises(ConfigError, match="has no 'test' split"):
        cfg.split("test")
