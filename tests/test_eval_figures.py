"""Evaluation figures: curves and the F1-optimal threshold read off pycocotools' arrays, the
confusion matrix on constructed cases with a known answer, and the files the report writes."""
import csv
import json

import cv2
import numpy as np
import pytest

from detector.data import build_dataset
from detector.evaluation.coco_evaluator import COCOEvaluator
from detector.evaluation.confusion import confusion_matrix, match_boxes
from detector.evaluation.curves import CONF_GRID, confidence_curves
from detector.evaluation.image_grids import label_positions
from detector.evaluation.report import describe_conf, format_pr_table, write_eval_report
from conftest import naive_mean_f1

NAMES = ("red", "green", "blue")
CAT_IDS = (3, 7, 9)                                   # dataset category ids of classes 0, 1, 2
COLORS = ((30, 30, 230), (30, 200, 30), (230, 30, 30))  # BGR
H, W = 96, 128
# per image: (class, x1, y1, x2, y2) objects; image 3 also holds a crowd region (class 1)
OBJECTS = {1: [(0, 10, 10, 40, 40), (1, 70, 20, 110, 60)],
           2: [(2, 20, 30, 60, 80), (0, 80, 10, 120, 40)],
           3: [(0, 50, 40, 90, 80)],
           4: [(1, 5, 5, 35, 50), (2, 60, 50, 100, 90), (0, 90, 5, 125, 30)]}
CROWD = {3: (1, 5, 5, 40, 30)}


def _write_dataset(root):
    """Coloured rectangles as PNGs and their COCO JSON; returns a data config mapping."""
    images, anns = [], []
    (root / "images").mkdir(parents=True)
    for image_id, objects in OBJECTS.items():
        img = np.full((H, W, 3), 90, np.uint8)
        for c, x1, y1, x2, y2 in objects:
            img[y1:y2, x1:x2] = COLORS[c]
        name = f"{image_id:03d}.png"
        cv2.imwrite(str(root / "images" / name), img)
        images.append({"id": image_id, "file_name": name, "height": H, "width": W})
        crowd = [CROWD[image_id] + (1,)] if image_id in CROWD else []
        for c, x1, y1, x2, y2, *is_crowd in [o + (0,) for o in objects] + crowd:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": CAT_IDS[c],
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float((x2 - x1) * (y2 - y1)),
                         "iscrowd": is_crowd[0]})
    cats = [{"id": i, "name": n} for i, n in zip(CAT_IDS, NAMES)]
    (root / "val.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    split = {"images": "images", "annotations": "val.json"}
    return {"format": "coco", "root": str(root), "names": list(NAMES), "train": split, "val": split}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return build_dataset(_write_dataset(tmp_path_factory.mktemp("evalfig")), "val", 128)


def _evaluate(dataset, detections):
    """detections: image id -> list of (class, score, x1, y1, x2, y2) in image pixels."""
    ev = COCOEvaluator(dataset.coco_gt(), dataset.label_to_cat_id, dataset.names)
    for image_id in OBJECTS:
        d = np.array(detections.get(image_id, []), np.float64).reshape(-1, 6)
        ev.update([{"boxes": d[:, 2:], "scores": d[:, 1], "labels": d[:, 0].astype(int)}],
                  [{"image_id": image_id}], letterboxed=False)
    ev.summarize()
    return ev


def _perfect(scores=(0.9, 0.8, 0.7, 0.6, 0.55, 0.5, 0.85, 0.75)):
    it = iter(scores)
    return {i: [(c, next(it), x1, y1, x2, y2) for c, x1, y1, x2, y2 in objs] for i, objs in OBJECTS.items()}


def _noisy(seed):
    """Shifted boxes, some missed, some with the wrong class, and false positives."""
    rng = np.random.default_rng(seed)
    out = {}
    for image_id, objects in OBJECTS.items():
        dets = []
        for c, *box in objects:
            if rng.uniform() < 0.8:
                c = c if rng.uniform() < 0.8 else (c + 1) % 3
                dets.append((c, rng.uniform(0.05, 1), *(np.array(box) + rng.integers(-6, 7, 4))))
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, W - 30), rng.uniform(0, H - 30)
            dets.append((rng.integers(0, 3), rng.uniform(0.05, 0.9), x, y, x + 25, y + 25))
        out[image_id] = dets
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_is_the_f1_argmax_of_the_cocoeval_arrays(dataset, seed):
    ev = _evaluate(dataset, _noisy(seed))
    curves = confidence_curves(ev)
    reference = naive_mean_f1(ev.cocoeval, CONF_GRID)
    np.testing.assert_allclose(curves.mean("f1"), reference, atol=1e-12)
    conf, f1 = curves.best_conf()
    best = reference.max()
    assert f1 == pytest.approx(best)
    ties = np.flatnonzero(np.isclose(reference, best, rtol=0, atol=1e-12))
    run = ties[:np.argmax(np.diff(np.r_[ties, ties[-1] + 2]) > 1) + 1]   # first run of the maximum
    assert conf == pytest.approx(CONF_GRID[(run[0] + run[-1]) // 2])
    # the mean PR curve is pycocotools' own: its mean is the AP50 it reports
    assert np.mean(curves.mean("pr_precision")) == pytest.approx(ev.metrics["AP50"])


def test_perfect_detections_give_one_below_the_lowest_score(dataset):
    ev = _evaluate(dataset, _perfect())
    curves = confidence_curves(ev)
    below = CONF_GRID <= 0.5
    np.testing.assert_allclose(curves.precision[:, below], 1.0)
    np.testing.assert_allclose(curves.recall[:, below], 1.0)
    np.testing.assert_allclose(curves.f1[:, below], 1.0)
    assert curves.f1[:, CONF_GRID > 0.9].max() == 0.0        # nothing kept above the best score
    conf, f1 = curves.best_conf()
    assert f1 == pytest.approx(1.0) and 0.0 <= conf <= 0.5
    rows = curves.rows_at(0.5)
    assert [r["name"] for r in rows] == list(NAMES)
    assert all(r["precision"] == pytest.approx(1) and r["recall"] == 1 and r["f1"] == pytest.approx(1)
               for r in rows)
    cm = confusion_matrix(ev, conf=0.5)
    expected = np.diag([sum(o[0] == c for objs in OBJECTS.values() for o in objs) for c in range(3)] + [0])
    np.testing.assert_array_equal(cm.counts, expected)


def test_confusion_matrix_known_answer(dataset):
    dets = {1: [(0, 0.9, 10, 10, 40, 40), (2, 0.8, 71, 21, 110, 60)],   # right; green called blue
            2: [(0, 0.7, 0, 85, 15, 95),                                # nothing there
                (0, 0.95, 80, 10, 120, 40), (2, 0.1, 20, 30, 60, 80)],  # right; blue too weak
            3: [(1, 0.6, 5, 5, 40, 30), (0, 0.9, 50, 40, 90, 80)]}      # on the crowd: ignored
    cm = confusion_matrix(_evaluate(dataset, dets), conf=0.5, iou=0.45)
    assert cm.names == list(NAMES) + ["background"]
    expected = np.zeros((4, 4), int)
    expected[0, 0] = 3            # red found three times
    expected[1, 2] = 1            # green predicted as blue
    expected[2, 3] = 2            # blue missed in image 2 (score below conf) and image 4
    expected[1, 3] = 1            # green missed in image 4
    expected[0, 3] = 1            # red missed in image 4
    expected[3, 0] = 1            # a red false positive on the background
    np.testing.assert_array_equal(cm.counts, expected)
    norm = cm.normalized()
    assert norm[1, 2] == pytest.approx(0.5) and norm[:3].sum(1) == pytest.approx([1, 1, 1])


def test_match_boxes_is_greedy_one_to_one():
    ious = np.array([[0.9, 0.6], [0.8, 0.3], [0.2, 0.1]])
    assert match_boxes(ious, 0.45) == [(0, 0)]
    assert sorted(match_boxes(np.array([[0.5, 0.9], [0.7, 0.0]]), 0.45)) == [(0, 1), (1, 0)]


def test_report_files_and_user_threshold(dataset, tmp_path):
    ev = _evaluate(dataset, _noisy(0))
    report = write_eval_report(ev, dataset, tmp_path / "f1", grids=1)
    assert report["conf_source"] == "f1" and report["conf"] == report["best_conf"]
    names = {"P_curve.png", "R_curve.png", "F1_curve.png", "PR_curve.png", "confusion_matrix.png",
             "confusion_matrix_normalized.png", "confusion_matrix.csv", "val_batch0_labels_vs_pred.png"}
    assert set(report["files"]) == names
    for name, path in report["files"].items():
        assert path.parent == tmp_path / "f1" and path.stat().st_size > 0
        if name.endswith(".png"):
            img = cv2.imread(str(path))
            assert img is not None and min(img.shape[:2]) > 200, name
    with open(report["files"]["confusion_matrix.csv"], newline="") as f:
        table = list(csv.reader(f))
    assert table[0][1:] == list(NAMES) + ["background"]
    assert [r[0] for r in table[1:]] == list(NAMES) + ["background"]
    text = format_pr_table(report["per_class"])
    assert all(n in text for n in NAMES) and text.splitlines()[1].startswith("all")

    user = write_eval_report(ev, dataset, tmp_path / "user", conf=0.5, grids=1)
    assert user["conf"] == 0.5 and user["conf_source"] == "user"
    assert user["best_conf"] == report["best_conf"]
    with pytest.raises(ValueError, match="confidence threshold"):
        write_eval_report(ev, dataset, tmp_path / "bad", conf=1.5)
    # the threshold stored with the weights comes before this split's optimum, the user's before both
    stored = write_eval_report(ev, None, tmp_path / "stored", stored_conf=0.4)
    assert (stored["conf"], stored["conf_source"]) == (0.4, "stored")
    assert describe_conf(stored).startswith("conf 0.4 (F1-optimal on val, stored in the checkpoint); "
                                            "F1-optimal here: ")
    assert write_eval_report(ev, None, tmp_path / "both", conf=0.5, stored_conf=0.4)["conf_source"] == "user"
    # no pictures on request (eval --no-plots): the same table, the CSV only
    bare = write_eval_report(ev, dataset, tmp_path / "bare", grids=1, plots=False)
    assert set(bare["files"]) == {"confusion_matrix.csv"}
    assert sorted(p.name for p in (tmp_path / "bare").iterdir()) == ["confusion_matrix.csv"]
    assert bare["per_class"] == report["per_class"] and bare["conf"] == report["conf"]


def test_report_without_detections(dataset, tmp_path):
    ev = _evaluate(dataset, {})
    report = write_eval_report(ev, None, tmp_path)            # no dataset: no image grids
    assert report["best_conf"] is None and report["conf_source"] == "default"
    assert not any(name.startswith("val_batch") for name in report["files"])
    assert all(r["recall"] == 0 and r["f1"] == 0 for r in report["per_class"])
    cm = confusion_matrix(ev, conf=report["conf"])
    assert cm.counts[:3, 3].sum() == sum(len(o) for o in OBJECTS.values()) and cm.counts[:, :3].sum() == 0


def test_unsummarized_evaluator_is_a_clear_error(dataset):
    ev = COCOEvaluator(dataset.coco_gt(), dataset.label_to_cat_id, dataset.names)
    with pytest.raises(ValueError, match="summarize"):
        confidence_curves(ev)


def test_labels_do_not_overlap_when_there_is_room():
    boxes = [(40, 40, 100, 100), (42, 42, 98, 98), (44, 44, 96, 96)]   # same corner three times
    rects = label_positions(boxes, [(50, 14)] * 3, (200, 200))
    for i in range(3):
        x1, y1, x2, y2 = rects[i]
        assert 0 <= x1 and 0 <= y1 and x2 <= 200 and y2 <= 200
        for j in range(i):
            a = rects[j]
            assert min(x2, a[2]) <= max(x1, a[0]) or min(y2, a[3]) <= max(y1, a[1]), (rects[i], a)
