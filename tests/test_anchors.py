"""detector.data.anchors: k-means on box sizes finds the clusters, and the config line groups
them per level; `cspdet anchors` prints both from a COCO file."""
import json

import numpy as np
import pytest

from detector.data.anchors import anchor_fitness, format_anchors, kmeans_anchors, sizes_from_coco, wh_iou


def test_kmeans_finds_three_size_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[10, 12], [40, 30], [120, 160]], dtype=float)
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, (50, 2)) for c in centres])
    anchors = kmeans_anchors(wh, k=3)
    assert np.allclose(anchors, centres, rtol=0.06)  # sorted by area, smallest first
    iou, recall = anchor_fitness(wh, anchors)
    assert iou > 0.9 and recall == 1.0
    assert wh_iou(np.array([[2.0, 2.0]]), np.array([[2.0, 2.0], [4.0, 1.0]])).tolist() == [[1.0, 2 / 6]]
    assert format_anchors(centres, 3) == "anchors: [[10, 12], [40, 30], [120, 160]]"
    assert format_anchors(np.repeat(centres, 2, 0), 3) == "anchors: [[10, 12, 10, 12], [40, 30, 40, 30], [120, 160, 120, 160]]"
    with pytest.raises(ValueError, match="at least k=9"):
        kmeans_anchors(wh[:5], k=9)


def test_cli_prints_anchors_from_coco(tmp_path, capsys):
    from detector.cli.anchors import main

    images = [{"id": i, "width": 200, "height": 100} for i in range(6)]
    boxes = [[0, 0, 20, 10], [0, 0, 60, 40], [0, 0, 100, 80]] * 2
    anns = [{"image_id": i, "bbox": b, "iscrowd": 0} for i, b in enumerate(boxes)]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    assert sizes_from_coco(str(path), 400).tolist()[0] == [40.0, 20.0]  # scaled by 400 / 200
    assert main(["--coco", str(path), "--img-size", "400", "-k", "3", "--levels", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("# 6 boxes at img_size 400: mean best IoU 1.000")
    assert out[1] == "anchors: [[40, 20], [120, 80], [200, 160]]"
