"""Data configs, COCO and YOLO datasets over real data (coco128), batches and ground truth."""
import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from detector.config import ConfigError
from detector.data import (AugmentConfig, DatasetNotFoundError, build_dataloader, build_dataset,
                           load_augment_config, load_data_config, unletterbox_boxes)

from conftest import COCO128, DATA_CONFIGS, need_coco128
from rect_datasets import coco_cfg, make_rect_coco


# ------------------------------------------------------------------------------ configs
def test_coco128_yaml_paths_resolve_against_the_yaml_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    cfg = load_data_config(DATA_CONFIGS / "coco128.yaml")
    assert Path(cfg.root) == COCO128.resolve()
    assert cfg.train.images == str(COCO128.resolve() / "images" / "train2017")
    assert cfg.format == "coco" and len(cfg.names) == 80 and cfg.names[0] == "person"
    yolo = load_data_config(DATA_CONFIGS / "coco128_yolo.yaml")
    assert yolo.train.labels == str(COCO128.resolve() / "labels" / "train2017")


def test_dict_config_paths_resolve_against_base_dir(tmp_path):
    cfg = load_data_config({"format": "yolo", "names": ["a"], "root": "d", "train": "images/x"},
                           base_dir=tmp_path)
    assert cfg.train.images == str(tmp_path / "d" / "images" / "x")
    assert cfg.train.labels == str(tmp_path / "d" / "labels" / "x")


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="data.trian"):
        load_data_config({"format": "yolo", "names": ["a"], "trian": "x"})
    with pytest.raises(ConfigError, match="data.train.image"):
        load_data_config({"format": "coco", "train": {"image": "x", "annotations": "y"}})
    with pytest.raises(ConfigError, match="format"):
        load_data_config({"format": "pascal"})
    with pytest.raises(ConfigError, match="mosiac"):
        load_augment_config({"mosiac": 1.0})
    with pytest.raises(ConfigError, match="annotations"):
        load_data_config({"format": "coco", "train": "images/train"})


def test_augment_defaults_are_yolo_like():
    a = AugmentConfig()
    assert a.mosaic == 1.0 and a.scale == (0.5, 1.5) and a.fliplr == 0.5
    assert load_augment_config({"scale": [0.8, 1.2]}).scale == (0.8, 1.2)


def test_missing_coco_says_where_to_get_it(tmp_path):
    d = yaml.safe_load((DATA_CONFIGS / "coco.yaml").read_text())
    d["root"] = str(tmp_path)
    with pytest.raises(DatasetNotFoundError) as e:
        build_dataset(d, "val", 320)
    msg = str(e.value)
    assert "cocodataset.org" in msg and "instances_val2017.json" in msg and "val2017.zip" in msg


# ------------------------------------------------------------------------------ coco128
@pytest.fixture(scope="module")
def coco128_coco():
    need_coco128()
    return build_dataset(DATA_CONFIGS / "coco128.yaml", "train", 320)


@pytest.fixture(scope="module")
def coco128_yolo():
    need_coco128()
    return build_dataset(DATA_CONFIGS / "coco128_yolo.yaml", "train", 320)


def test_coco128_quirks_handled(coco128_coco, coco128_yolo):
    # both layouts keep all 128 images; the 2 without objects are background
    assert len(coco128_coco) == 128 and len(coco128_yolo) == 128
    by_name = {Path(r.path).name: r for r in coco128_yolo.records}
    for stem in ("000000000250", "000000000508"):
        assert len(by_name[stem + ".jpg"].boxes) == 0
    # the 2 label files without an image are not in the dataset
    assert not any("000000000656" in r.path or "000000000659" in r.path for r in coco128_yolo.records)


def test_coco_category_ids_map_to_contiguous_indices(coco128_coco):
    ds = coco128_coco
    assert len(ds.label_to_cat_id) == 80 and ds.label_to_cat_id[0] == 1 and ds.label_to_cat_id[-1] == 90
    assert ds.label_to_cat_id == sorted(ds.label_to_cat_id)
    gt = ds.coco_gt()
    assert [gt.cats[c]["name"] for c in ds.label_to_cat_id] == ds.names


def test_coco_and_yolo_layouts_give_the_same_targets(coco128_coco, coco128_yolo):
    """README: on labelled images the YOLO labels equal the JSON's non-crowd boxes."""
    yolo = {Path(r.path).name: i for i, r in enumerate(coco128_yolo.records)}
    checked = 0
    for i in range(0, 128, 9):
        a = coco128_coco[i]
        b = coco128_yolo[yolo[Path(a["meta"]["path"]).name]]
        assert a["meta"]["orig_shape"] == b["meta"]["orig_shape"]
        ta = a["targets"][torch.argsort(a["targets"][:, 1])]
        tb = b["targets"][torch.argsort(b["targets"][:, 1])]
        assert ta.shape == tb.shape
        torch.testing.assert_close(ta, tb, atol=0.05, rtol=0)  # YOLO txt has 6 decimals
        checked += len(ta)
    assert checked > 30


def test_crowd_boxes_not_targets_but_in_ground_truth(coco128_coco):
    ds = coco128_coco
    gt = ds.coco_gt()
    crowd = [a for a in gt.dataset["annotations"] if a["iscrowd"]]
    assert len(crowd) == 10
    n_targets = sum(len(r.boxes) for r in ds.records)
    assert n_targets == len(gt.dataset["annotations"]) - 10 == 929
    assert len(gt.getImgIds()) == 128


def _perfect_ap(ds):
    """Evaluate the ground truth boxes mapped back from the network input: AP must be 1."""
    from pycocotools.cocoeval import COCOeval
    gt = ds.coco_gt()
    dets = []
    for i in range(len(ds)):
        item = ds[i]
        m = item["meta"]
        t = item["targets"].numpy()
        boxes = unletterbox_boxes(t[:, 1:], m["ratio"], m["pad"], m["orig_shape"])
        for c, (x1, y1, x2, y2) in zip(t[:, 0], boxes):
            dets.append({"image_id": m["image_id"], "category_id": ds.label_to_cat_id[int(c)],
                         "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "score": 1.0})
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("which", ["coco128_coco", "coco128_yolo"])
def test_ground_truth_round_trip_through_eval_transform_scores_ap_1(which, request):
    stats = _perfect_ap(request.getfixturevalue(which))
    assert stats[1] > 0.99, stats  # AP50
    assert stats[0] > 0.97, stats  # AP (letterbox round-off only)


# ------------------------------------------------------------------------------ batches
def test_batch_contract_and_letterbox_meta(tmp_path):
    root = make_rect_coco(tmp_path, n=5)
    ds = build_dataset(coco_cfg(root), "val", 96)
    loader = build_dataloader(ds, batch_size=2, workers=0, shuffle=False, seed=0)
    batch = next(iter(loader))
    assert set(batch) == {"images", "targets", "meta"}
    assert batch["images"].dtype == torch.uint8 and batch["images"].shape == (2, 3, 96, 96)
    assert len(batch["targets"]) == 2 and batch["targets"][0].dtype == torch.float32
    assert batch["targets"][0].shape == (3, 5)
    m = batch["meta"][0]
    assert m["image_id"] == 1 and m["orig_shape"] == (120, 160) and m["path"].endswith("000.png")
    assert m["ratio"] == pytest.approx(96 / 160) and m["pad"] == (0.0, 12.0)
    # boxes map back to the JSON's boxes
    gt = ds.coco_gt()
    back = unletterbox_boxes(batch["targets"][0][:, 1:], m["ratio"], m["pad"], m["orig_shape"])
    want = np.array([[x, y, x + w, y + h] for x, y, w, h in
                     (a["bbox"] for a in gt.imgToAnns[1])], np.float32)
    np.testing.assert_allclose(np.sort(back.numpy(), 0), np.sort(want, 0), atol=1e-3)
    # label indices follow the sorted category ids 3, 7, 9
    assert sorted(batch["targets"][0][:, 0].tolist()) == [0, 1, 2]
    assert ds.label_to_cat_id == [3, 7, 9]


def test_loader_with_workers_is_reproducible(tmp_path):
    root = make_rect_coco(tmp_path, n=8)
    ds = build_dataset(coco_cfg(root), "train", 64, augment=AugmentConfig())

    def first_batches(seed):
        loader = build_dataloader(ds, batch_size=4, workers=2, shuffle=True, seed=seed)
        assert loader.persistent_workers and loader.num_workers == 2
        out = [(b["images"].clone(), [m["image_id"] for m in b["meta"]]) for b in loader]
        del loader
        return out

    a, b, c = first_batches(1), first_batches(1), first_batches(2)
    assert [x[1] for x in a] == [x[1] for x in b]
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b))
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, c))


def test_distributed_sampler_used(tmp_path, monkeypatch):
    from torch.utils.data import DistributedSampler
    root = make_rect_coco(tmp_path, n=4)
    ds = build_dataset(coco_cfg(root), "val", 64)
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: 2)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda *a, **k: 1)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    loader = build_dataloader(ds, batch_size=1, workers=0, shuffle=True, seed=0, distributed=True)
    assert isinstance(loader.sampler, DistributedSampler)
    ids1 = [b["meta"][0]["image_id"] for b in loader]
    ids2 = [b["meta"][0]["image_id"] for b in loader]
    assert len(ids1) == 2 and len(ids2) == 2
    assert loader.sampler.epoch == 1 and loader.epoch == 2  # set per pass when the caller does not
    loader.sampler.set_epoch(7)  # ... and left alone when it does
    list(loader)
    assert loader.sampler.epoch == 7


def test_ram_cache_gives_the_same_eval_samples(tmp_path):
    root = make_rect_coco(tmp_path, n=3)
    plain = build_dataset(coco_cfg(root), "val", 160)
    cached = build_dataset(coco_cfg(root), "val", 160, cache=True)
    for i in range(3):
        a, b = plain[i], cached[i]
        assert torch.equal(a["image"], b["image"])
        torch.testing.assert_close(a["targets"], b["targets"])
        assert a["meta"] == b["meta"]
