"""Shared test fixtures and data paths; pytest loads this file before every test module.

Fixtures: ``tiny_data`` (a small shapes dataset, session-wide), ``broken_coco`` (a COCO
folder with unreadable images) and ``small_checkpoint`` (a 3-class detector checkpoint whose
random weights find boxes on every frame, for the demo). Helpers that several modules call with their own arguments
(``calibrated_detector``, ``tiny_config``, ``naive_mean_f1``) and the paths are imported from here
(``from conftest import ...``); tiny datasets of coloured rectangles live in ``rect_datasets``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rect_datasets import make_rect_coco, rect_image

REPO = Path(__file__).resolve().parents[1]
DATA_CONFIGS = REPO / "configs" / "data"
COCO128 = REPO.parent / "shared" / "data" / "coco128"  # shared read-only data, beside the repo
BCCD = REPO.parent / "shared" / "data" / "bccd"  # real photos, Pascal VOC layout


def need_coco128():
    """Skip the calling test when the shared coco128 data is not on this machine."""
    if not COCO128.is_dir():
        pytest.skip(f"shared test data not found at {COCO128}")


# ------------------------------------------------------------------------------ models

def calibrated_detector(cfg, seed: int = 0, batches: int = 2):
    """Build ``cfg`` with random weights, BatchNorm statistics measured on random batches and
    spread-out scores: a detector that behaves like a trained one, for comparing engines.

    Default BatchNorm statistics let activations grow to ~1e2, far from what a real export
    sees; spreading the prediction convs' scores gives NMS real choices to make.
    """
    from detector import build_model

    torch.manual_seed(seed)
    model = build_model(cfg)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.rand(4, 3, 128, 128))
        for pred in model.head.preds:
            pred.weight.mul_(0.05)
            pred.bias.normal_(0, 1)
    return model.eval()


SMALL_MODEL = {"num_classes": 3, "backbone": "configs/backbones/peleenet.yaml",
               "neck": {"type": "efm", "channels": 16}, "head": {"width": 32}}
SMALL_NAMES = ["red", "green", "blue"]


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory):
    """A checkpoint of a small detector trained at 128 px (random weights, confident outputs)."""
    from detector import build_model
    from detector.engine.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model({"model": SMALL_MODEL})
    with torch.no_grad():  # confident random outputs: every frame gets boxes to draw
        for pred in model.head.preds:
            pred.bias.add_(3.0)  # not 6: saturated scores tie, and NMS may break ties either way
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    return save_checkpoint({"model": model.state_dict(), "names": SMALL_NAMES,
                            "config": {"model": model.config, "train": {"img_size": 128}}}, path)


# ------------------------------------------------------------------------------ training

TINY_MODEL = {
    "num_classes": 80,
    "backbone": {
        "arch": "cspnet", "name": "tiny", "num_classes": 0, "act": "leaky_relu", "act_slope": 0.1,
        "stem": {"type": "conv", "channels": [8], "kernel_size": 3, "stride": 2, "pool": "max",
                 "pool_kernel": 2},
        "stage_defaults": {"csp": True, "block": "basic", "down": "conv", "stride": 2,
                           "shortcut": "darknet"},
        "stages": [{"depth": 1, "out_channels": 16, "stride": 1}, {"depth": 1, "out_channels": 16},
                   {"depth": 1, "out_channels": 32}, {"depth": 1, "out_channels": 32}],
    },
    "neck": {"type": "efm", "channels": [8, 8, 8], "maxout": True, "refine": "sam",
             "down": "maxpool", "act": "leaky_relu"},
    "head": {"anchors": [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119],
                         [116, 90, 156, 198, 373, 326]],
             "strides": [8, 16, 32], "width": [16, 16, 16]},
}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """16 train / 8 val shapes images at 64 px (a data config mapping)."""
    from detector.data.shapes import make_shapes
    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root, num_train=16, num_val=8, img_size=64, seed=0, progress=False)
    return {"format": "coco", "root": str(root),
            "train": {"images": "images/train", "annotations": "annotations/instances_train.json"},
            "val": {"images": "images/val", "annotations": "annotations/instances_val.json"},
            "names": ["circle", "square", "triangle", "star", "cross"]}


def tiny_config(tiny_data, save_dir, **train):
    """A full training config: the small CSP + EFM(SAM) model on ``tiny_data``, 2 epochs."""
    t = {"name": "tiny", "epochs": 2, "batch_size": 4, "img_size": 64, "workers": 0, "threads": 1,
         "save_dir": str(save_dir), "lr": 0.01, "warmup_epochs": 0.5, "warmup_min_iters": 0}
    t.update(train)
    return {"model": TINY_MODEL, "data": tiny_data, "train": t,
            "eval": {"img_size": 64, "conf_thres": 0.001, "iou_thres": 0.6, "max_det": 100,
                     "interval": 1}}


@pytest.fixture(scope="session")
def tiny_bccd(tmp_path_factory):
    """A few shared BCCD photos in the VOCdevkit layout (6 train / 3 val / 3 test, symlinked):
    a data config mapping with a test split, 3 classes. Skips when BCCD is not on this machine."""
    if not BCCD.is_dir():
        pytest.skip(f"shared test data not found at {BCCD}")
    root = tmp_path_factory.mktemp("bccd")
    lists = root / "ImageSets" / "Main"
    lists.mkdir(parents=True)
    splits = {}
    for split, count in (("train", 6), ("val", 3), ("test", 3)):
        ids = (BCCD / "ImageSets" / "Main" / f"{split}.txt").read_text().split()[:count]
        (lists / f"{split}.txt").write_text("\n".join(ids) + "\n")
        splits[split] = f"ImageSets/Main/{split}.txt"
    for folder, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".xml")):
        (root / folder).mkdir()
        for ids_file in lists.iterdir():
            for i in ids_file.read_text().split():
                (root / folder / f"{i}{suffix}").symlink_to(BCCD / folder / f"{i}{suffix}")
    return {"format": "voc", "root": str(root), **splits, "names": ["RBC", "WBC", "Platelets"]}


# ------------------------------------------------------------------------------ evaluation

def naive_mean_f1(ev, grid):
    """Mean F1 over classes at each confidence of ``grid``, by plain loops over a COCOeval's
    ``eval`` arrays (IoU 0.5, area all, the largest maxDets): the reference the library's
    curves and stored threshold are checked against."""
    precision, scores = ev.eval["precision"], ev.eval["scores"]
    recall_points = ev.params.recThrs
    f1 = np.zeros(len(grid))
    classes = [k for k in range(precision.shape[2]) if precision[0, 0, k, 0, -1] > -1]
    for i, c in enumerate(grid):
        for k in classes:
            last = -1
            for j in range(len(recall_points)):
                if scores[0, j, k, 0, -1] > 0 and scores[0, j, k, 0, -1] >= c:
                    last = j
            if last >= 0:
                p, r = precision[0, last, k, 0, -1], recall_points[last]
                f1[i] += 2 * p * r / (p + r) if p + r > 0 else 0.0
    return f1 / len(classes)


# ------------------------------------------------------------------------------ bad data

@pytest.fixture
def broken_coco(tmp_path):
    """6 good images + corrupt, truncated, zero-byte and missing files, all in the JSON."""
    root = make_rect_coco(tmp_path, n=6, size=(120, 160))
    img_dir = root / "images" / "train"
    rng = np.random.default_rng(0)
    (img_dir / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 20)
    big = rect_image(240, 320, [(40, 40, 120, 120)], [0])
    big += rng.integers(0, 60, big.shape, dtype=np.uint8)  # entropy, so the cut lands in the scan data
    ok, enc = cv2.imencode(".jpg", big)
    (img_dir / "truncated.jpg").write_bytes(enc.tobytes()[: int(len(enc) * 0.8)])
    (img_dir / "empty.jpg").write_bytes(b"")
    ann_path = root / "annotations" / "instances_train.json"
    data = json.loads(ann_path.read_text())
    for k, name in enumerate(["corrupt.jpg", "truncated.jpg", "empty.jpg", "missing.jpg"]):
        image_id = 100 + k
        data["images"].append({"id": image_id, "file_name": name, "height": 240, "width": 320})
        data["annotations"].append({"id": 1000 + k, "image_id": image_id, "category_id": 3,
                                    "bbox": [40, 40, 80, 80], "area": 6400.0, "iscrowd": 0})
    ann_path.write_text(json.dumps(data))
    return root


# ------------------------------------------------------------------------------ OpenVINO, apart

# tests/test_openvino.py runs in a pytest process of its own (tests/test_openvino_apart.py starts
# it with CSPDET_TEST_CHILD=openvino): with OpenVINO's runtime and thread pools loaded into the
# main test process, tests that ran after it crashed with a segmentation fault (in CI, in one
# order, not under a debugger); alone, the module passes.
collect_ignore = [] if os.environ.get("CSPDET_TEST_CHILD") == "openvino" else ["test_openvino.py"]
