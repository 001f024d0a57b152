"""The evaluator must agree with pycocotools run directly, on real COCO annotations (coco128)."""
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from detector.evaluation import COCOEvaluator, STAT_NAMES, format_metrics, save_detections

COCO128 = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128"
ANN = COCO128 / "annotations" / "instances_train2017.json"

pytestmark = pytest.mark.skipif(not ANN.is_file(), reason="shared coco128 data not found")


def _quiet(fn, *a, **k):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*a, **k)


@pytest.fixture(scope="module")
def coco_gt():
    from pycocotools.coco import COCO
    return _quiet(COCO, str(ANN))


@pytest.fixture(scope="module")
def label_to_cat_id(coco_gt):
    return sorted(coco_gt.getCatIds())  # YOLO class index -> COCO category id (1..90, with gaps)


# A letterbox per image: boxes are handed to the evaluator in network pixels and must come back.
RATIO, PAD = 0.5, (16.0, 48.0)


def _to_network(xyxy):
    return xyxy * RATIO + np.array([PAD[0], PAD[1], PAD[0], PAD[1]])


def _meta(coco_gt, img_id):
    info = coco_gt.imgs[img_id]
    return {"image_id": img_id, "orig_shape": (info["height"], info["width"]), "ratio": RATIO, "pad": PAD,
            "path": info["file_name"]}


def _gt_predictions(coco_gt, cat_to_label, img_ids, rng=None):
    """Ground truth of each image as detections (optionally perturbed), in network pixels."""
    preds, metas = [], []
    for img_id in img_ids:
        anns = [a for a in coco_gt.imgToAnns[img_id] if not a["iscrowd"]]
        xywh = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        labels = np.array([cat_to_label[a["category_id"]] for a in anns], np.int64)
        scores = np.ones(len(anns))
        if rng is not None and len(anns):
            xywh[:, :2] += rng.normal(0, 4, (len(anns), 2))
            xywh[:, 2:] *= rng.uniform(0.8, 1.2, (len(anns), 2))
            scores = rng.uniform(0.05, 1.0, len(anns))
            keep = rng.uniform(size=len(anns)) > 0.2            # miss some objects
            wrong = rng.uniform(size=len(anns)) < 0.1           # and mislabel a few
            labels = np.where(wrong, (labels + 1) % 80, labels)
            xywh, labels, scores = xywh[keep], labels[keep], scores[keep]
            h, w = coco_gt.imgs[img_id]["height"], coco_gt.imgs[img_id]["width"]
            n_fp = int(rng.integers(0, 4))                       # and add false positives
            fp = np.c_[rng.uniform(0, w / 2, n_fp), rng.uniform(0, h / 2, n_fp),
                       rng.uniform(10, w / 2, n_fp), rng.uniform(10, h / 2, n_fp)]
            xywh = np.r_[xywh, fp]
            labels = np.r_[labels, rng.integers(0, 80, n_fp)]
            scores = np.r_[scores, rng.uniform(0.01, 0.5, n_fp)]
            x2y2 = xywh[:, :2] + xywh[:, 2:]
            xywh[:, :2] = xywh[:, :2].clip(0, [w, h])
            xywh[:, 2:] = x2y2.clip(0, [w, h]) - xywh[:, :2]
        xyxy = np.c_[xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]
        preds.append({"boxes": _to_network(xyxy), "scores": scores, "labels": labels})
        metas.append(_meta(coco_gt, img_id))
    return preds, metas


def _pycocotools_direct(gt_file, dt_file, img_ids):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def run():
        gt = COCO(str(gt_file))
        dt = gt.loadRes(str(dt_file))
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = img_ids
        ev.evaluate(); ev.accumulate(); ev.summarize()
        return ev.stats
    return _quiet(run)


def test_ground_truth_as_detections_gives_ap_1(coco_gt, label_to_cat_id):
    cat_to_label = {c: i for i, c in enumerate(label_to_cat_id)}
    img_ids = sorted(coco_gt.getImgIds())
    ev = COCOEvaluator(coco_gt, label_to_cat_id)
    preds, metas = _gt_predictions(coco_gt, cat_to_label, img_ids)
    ev.update(preds[:64], metas[:64])
    ev.update(preds[64:], metas[64:])
    m = ev.summarize()
    assert m["num_images"] == 128
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl"):
        assert m[k] == pytest.approx(1.0), k
    assert m["per_class"] and all(r["AP"] == pytest.approx(1.0) for r in m["per_class"])
    assert sum(r["instances"] for r in m["per_class"]) == 929  # 939 boxes, 10 crowd


def test_perturbed_detections_match_pycocotools_run_directly(coco_gt, label_to_cat_id, tmp_path):
    cat_to_label = {c: i for i, c in enumerate(label_to_cat_id)}
    rng = np.random.default_rng(0)
    img_ids = sorted(coco_gt.getImgIds())[:100]  # a subset: only these images are scored
    preds, metas = _gt_predictions(coco_gt, cat_to_label, img_ids, rng)
    ev = COCOEvaluator(coco_gt, label_to_cat_id)
    ev.update(preds, metas)
    m = ev.summarize()
    assert 0.2 < m["AP"] < 0.95 and 0.2 < m["AP50"] <= 1.0
    # the detections written by the evaluator, read back by pycocotools itself
    dt_file = save_detections(m["detections"], tmp_path / "dets.json")
    direct = _pycocotools_direct(ANN, dt_file, img_ids)
    np.testing.assert_allclose([m[k] for k in STAT_NAMES], direct, atol=1e-12)
    # and the same figures from the detections written independently of the evaluator
    own = []
    for p, meta in zip(preds, metas):
        xyxy = (p["boxes"] - np.array([*PAD, *PAD])) / RATIO
        for b, s, l in zip(xyxy, p["scores"], p["labels"]):
            own.append({"image_id": meta["image_id"], "category_id": label_to_cat_id[l],
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(s)})
    (tmp_path / "own.json").write_text(json.dumps([{**d, "bbox": [float(v) for v in d["bbox"]]} for d in own]))
    direct_own = _pycocotools_direct(ANN, tmp_path / "own.json", img_ids)
    np.testing.assert_allclose([m[k] for k in STAT_NAMES], direct_own, atol=1e-4)


def test_category_ids_map_back_to_the_datasets_ids(coco_gt, label_to_cat_id):
    ev = COCOEvaluator(coco_gt, label_to_cat_id)
    img_id = 9  # has COCO ids 51 (bowl), 55 (orange), 56 (broccoli) -> labels 45, 49, 50
    meta = _meta(coco_gt, img_id)
    ev.update([{"boxes": _to_network(np.array([[1, 2, 30, 40], [5, 5, 50, 50]], float)),
                "scores": np.array([0.9, 0.8]), "labels": np.array([79, 45])}], [meta])
    dets = ev.detections
    assert [d["category_id"] for d in dets] == [90, 51]  # toothbrush is 90, not 79
    assert dets[0]["bbox"] == pytest.approx([1, 2, 29, 38])  # xywh, original pixels
    assert dets[0]["image_id"] == img_id
    with pytest.raises(ValueError, match="class index 80"):
        ev.update([{"boxes": np.zeros((1, 4)), "scores": [0.5], "labels": [80]}], [_meta(coco_gt, 25)])


def test_an_image_seen_twice_is_scored_once(coco_gt, label_to_cat_id):
    """A data loader replaces an unreadable image by another: that one must not count twice."""
    ev = COCOEvaluator(coco_gt, label_to_cat_id)
    pred = {"boxes": _to_network(np.array([[1, 2, 30, 40]], float)), "scores": [0.9], "labels": [45]}
    ev.update([pred, pred], [_meta(coco_gt, 9), _meta(coco_gt, 9)])
    assert len(ev.detections) == 1 and ev.image_ids == [9]


def test_empty_predictions_do_not_crash(coco_gt, label_to_cat_id):
    ev = COCOEvaluator(coco_gt, label_to_cat_id)
    ev.update([{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0)}],
              [_meta(coco_gt, 9)])
    m = ev.summarize()
    assert m["AP"] == 0.0 and m["detections"] == [] and m["num_images"] == 1
    assert {r["category_id"] for r in m["per_class"]} == {51, 55, 56}
    assert "AP50" in format_metrics(m)
    # an image with no objects and no detections: nothing to score (pycocotools' -1)
    ev = COCOEvaluator(coco_gt, label_to_cat_id)
    ev.update([{"boxes": np.zeros((0, 4)), "scores": [], "labels": []}], [_meta(coco_gt, 250)])
    assert ev.summarize()["AP"] == -1.0


def test_missed_class_scores_zero_in_the_per_class_table(coco_gt, label_to_cat_id):
    cat_to_label = {c: i for i, c in enumerate(label_to_cat_id)}
    img_ids = sorted(coco_gt.getImgIds())[:20]
    preds, metas = _gt_predictions(coco_gt, cat_to_label, img_ids)
    person = cat_to_label[1]
    for p in preds:  # drop every person
        keep = p["labels"] != person
        p.update(boxes=p["boxes"][keep], scores=p["scores"][keep], labels=p["labels"][keep])
    ev = COCOEvaluator(coco_gt, label_to_cat_id, names=[f"c{i}" for i in range(80)])
    ev.update(preds, metas)
    m = ev.summarize()
    rows = {r["category_id"]: r for r in m["per_class"]}
    assert rows[1]["AP"] == 0.0 and rows[1]["name"] == "c0" and rows[1]["instances"] > 0
    assert all(r["AP"] == pytest.approx(1.0) for c, r in rows.items() if c != 1)
    assert m["AP"] < 1.0
    table = format_metrics(m)
    assert "c0" in table and "cat_id" in table
