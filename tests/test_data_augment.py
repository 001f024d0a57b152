"""Augmentation: boxes must follow the pixels through mosaic, affine, flip and mixup."""
import random

import numpy as np
import pytest
import torch

from detector.data import (AugmentConfig, TrainTransform, build_dataloader, build_dataset,
                           random_size, rescale_batch)

from rect_datasets import CLASS_COLORS, coco_cfg, make_rect_coco

NO_COLOR = dict(hsv_h=0.0, hsv_s=0.0, hsv_v=0.0)


def assert_boxes_on_their_colour(image, targets, min_fraction=0.9):
    """Inside every target box the class colour must dominate (boxes follow the pixels)."""
    img = image.permute(1, 2, 0).numpy().astype(int)
    assert len(targets) > 0
    for cls, x1, y1, x2, y2 in targets.tolist():
        # an inner region (interpolation blurs the edges)
        ix1, iy1 = int(np.ceil(x1 + 0.25 * (x2 - x1))), int(np.ceil(y1 + 0.25 * (y2 - y1)))
        ix2, iy2 = int(np.floor(x2 - 0.25 * (x2 - x1))), int(np.floor(y2 - 0.25 * (y2 - y1)))
        if ix2 <= ix1 or iy2 <= iy1:
            continue
        patch = img[iy1:iy2, ix1:ix2]
        close = np.abs(patch - np.array(CLASS_COLORS[int(cls)])).max(-1) < 40
        assert close.mean() >= min_fraction, (cls, (x1, y1, x2, y2), close.mean())


@pytest.fixture(scope="module")
def rect_root(tmp_path_factory):
    return make_rect_coco(tmp_path_factory.mktemp("rects"), n=8)


@pytest.mark.parametrize("mosaic", [1.0, 0.0])
def test_boxes_follow_pixels(rect_root, mosaic):
    aug = AugmentConfig(mosaic=mosaic, **NO_COLOR, fliplr=0.5, min_box_size=4, min_visibility=0.3)
    ds = build_dataset(coco_cfg(rect_root), "train", 128, augment=aug, seed=3)
    n_boxes = 0
    for i in range(12):
        item = ds[i % len(ds)]
        assert item["image"].shape == (3, 128, 128) and item["image"].dtype == torch.uint8
        t = item["targets"]
        assert t.dtype == torch.float32 and t.shape[1] == 5
        if len(t):
            assert (t[:, 1:] >= 0).all() and (t[:, [1, 3]] <= 128).all() and (t[:, [2, 4]] <= 128).all()
            assert ((t[:, 3] - t[:, 1]) >= 4 - 1e-4).all() and ((t[:, 4] - t[:, 2]) >= 4 - 1e-4).all()
            assert_boxes_on_their_colour(item["image"], t)
        n_boxes += len(t)
    assert n_boxes > 12


def test_mosaic_combines_several_images(rect_root):
    aug = AugmentConfig(mosaic=1.0, scale=(0.5, 0.5), **NO_COLOR, fliplr=0.0, min_visibility=0.0)
    ds = build_dataset(coco_cfg(rect_root), "train", 128, augment=aug, seed=0)
    # at scale 0.5 the crop window shows the whole 2x2 grid: boxes from 4 images, 3 per image
    counts = [len(ds[i]["targets"]) for i in range(4)]
    assert max(counts) >= 9, counts


def test_mixup_keeps_boxes_of_both_images(rect_root):
    base = dict(mosaic=0.0, scale=(1.0, 1.0), translate=0.0, **NO_COLOR, fliplr=0.0)
    plain = build_dataset(coco_cfg(rect_root), "train", 128, augment=AugmentConfig(**base), seed=0)
    mixed = build_dataset(coco_cfg(rect_root), "train", 128,
                          augment=AugmentConfig(**base, mixup=1.0), seed=0)
    assert all(len(plain[i]["targets"]) == 3 for i in range(3))
    assert all(len(mixed[i]["targets"]) == 6 for i in range(3))


def test_colour_jitter_changes_pixels_not_boxes(rect_root):
    geo = dict(mosaic=0.0, scale=(1.0, 1.0), translate=0.0, fliplr=0.0)
    a = build_dataset(coco_cfg(rect_root), "train", 128, augment=AugmentConfig(**geo, **NO_COLOR), seed=0)
    b = build_dataset(coco_cfg(rect_root), "train", 128,
                      augment=AugmentConfig(**geo, hsv_h=0.1, hsv_s=0.7, hsv_v=0.4), seed=0)
    ia, ib = a[0], b[0]
    torch.testing.assert_close(ia["targets"], ib["targets"])
    assert not torch.equal(ia["image"], ib["image"])


def test_small_boxes_filtered_by_min_box_size(rect_root):
    aug = AugmentConfig(mosaic=0.0, scale=(0.25, 0.25), translate=0.0, **NO_COLOR, fliplr=0.0,
                        min_box_size=12)
    ds = build_dataset(coco_cfg(rect_root), "train", 128, augment=aug, seed=0)
    # rectangles are 18-40 px in a 160 px image -> 14-32 px at 128 -> 3.5-8 px at scale 0.25
    assert all(len(ds[i]["targets"]) == 0 for i in range(4))


def test_set_augment_switches_to_letterbox_without_rescan(rect_root):
    ds = build_dataset(coco_cfg(rect_root), "train", 128, augment=AugmentConfig(), seed=0)
    records = ds.records
    ds.set_augment(None)
    item = ds[0]
    assert ds.records is records
    assert item["meta"]["pad"] == (0.0, 16.0)  # letterbox of 160x120 at 128
    ds.set_augment(AugmentConfig(mosaic=0.0))
    assert ds.augment.mosaic == 0.0


def test_train_transform_reseed_is_deterministic():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (100, 128, 3), np.uint8)
    boxes = np.array([[10, 10, 50, 60]], np.float32)
    tf = TrainTransform(128, AugmentConfig(mosaic=0.0))
    tf.reseed(5)
    a = tf((img, boxes, np.array([0])))
    tf.reseed(5)
    b = tf((img, boxes, np.array([0])))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# ------------------------------------------------------------------------------ multi-scale
def test_random_size_is_a_multiple_of_32_in_range():
    sizes = {random_size(np.random.default_rng(i), 320, (0.5, 1.5)) for i in range(200)}
    assert sizes <= set(range(160, 481, 32)) and len(sizes) > 5
    assert {random_size(random.Random(i), 320, (1.0, 1.0)) for i in range(5)} == {320}
    assert random_size(np.random.default_rng(1), 320) == random_size(np.random.default_rng(1), 320)


def test_rescale_batch_scales_images_and_targets(rect_root):
    ds = build_dataset(coco_cfg(rect_root), "val", 128)
    batch = next(iter(build_dataloader(ds, batch_size=2, workers=0, shuffle=False, seed=0)))
    out = rescale_batch(batch, 64)
    assert out["images"].shape == (2, 3, 64, 64) and out["images"].dtype == torch.uint8
    torch.testing.assert_close(out["targets"][0][:, 1:], batch["targets"][0][:, 1:] / 2)
    torch.testing.assert_close(out["targets"][0][:, 0], batch["targets"][0][:, 0])
    assert out["meta"][0]["ratio"] == pytest.approx(batch["meta"][0]["ratio"] / 2)
    assert_boxes_on_their_colour(out["images"][0], out["targets"][0])
    assert rescale_batch(batch, 128) is batch


# ------------------------------------------------------------------------------ hand-written parts
def test_mosaic4_pastes_each_image_against_the_centre_with_its_boxes():
    from detector.data.augment import PAD_VALUE, mosaic4
    samples = []
    for k, (h, w) in enumerate([(64, 48), (40, 64), (64, 64), (30, 50)]):
        img = np.full((h, w, 3), 10 + 50 * k, np.uint8)
        samples.append((img, np.array([[0, 0, w, h]], np.float32), np.array([k])))
    canvas, boxes, classes = mosaic4(samples, 64, np.random.default_rng(0))
    assert canvas.shape == (128, 128, 3) and sorted(classes.tolist()) == [0, 1, 2, 3]
    covered = np.zeros((128, 128), bool)
    for (x1, y1, x2, y2), k in zip(boxes.astype(int).tolist(), classes.tolist()):
        # the whole-image box covers exactly that image's pixels, which touch the centre
        assert (canvas[y1:y2, x1:x2] == 10 + 50 * k).all()
        assert (x1 == 64 or x2 == 64) and (y1 == 64 or y2 == 64)
        covered[y1:y2, x1:x2] = True
    assert (canvas[~covered] == PAD_VALUE).all()
    # images larger than S are fitted to long side S, boxes scaled with them
    big = (np.zeros((256, 128, 3), np.uint8), np.array([[0, 0, 128, 256]], np.float32), np.array([0]))
    _, boxes, _ = mosaic4([big] * 4, 64, np.random.default_rng(0))
    assert np.allclose(boxes[:, 2] - boxes[:, 0], 32) and np.allclose(boxes[:, 3] - boxes[:, 1], 64)


def test_hsv_gain_scales_value_and_is_seeded():
    import albumentations as A
    from detector.data.augment import HSVGain
    grey = np.full((8, 8, 3), 100, np.uint8)
    brighter = A.Compose([HSVGain(hue=0.0, saturation=0.0, value=0.4, p=1.0)], seed=1)
    outs = [brighter(image=grey)["image"] for _ in range(20)]
    values = {int(o[0, 0, 0]) for o in outs}
    assert all(o.min() == o.max() for o in outs)          # stays grey: no hue/saturation change
    assert min(values) >= 60 and max(values) <= 140 and len(values) > 5
    colour = np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8)
    jitter = A.Compose([HSVGain(hue=0.1, saturation=0.7, value=0.4, p=1.0)], seed=5)
    a = jitter(image=colour)["image"]
    jitter.set_random_seed(5)
    assert np.array_equal(a, jitter(image=colour)["image"]) and not np.array_equal(a, colour)
    with pytest.raises(ValueError, match="saturation"):
        HSVGain(saturation=1.5)


@pytest.mark.parametrize("partners, max_decodes_per_item", [("seeded", 4), ("buffer", 1)])
def test_mosaic_partner_modes_decode_what_they_say(rect_root, partners, max_decodes_per_item):
    """`seeded` (default, exact resume) may decode three partners per sample; `buffer` (opt-in
    speed) takes them from the worker's decoded images once it holds enough, and boxes still
    follow the pixels."""
    aug = AugmentConfig(mosaic=1.0, mosaic_partners=partners, **NO_COLOR, min_box_size=4,
                        min_visibility=0.3)
    ds = build_dataset(coco_cfg(rect_root), "train", 128, augment=aug, seed=0)
    ds.buffer_size = 4  # smaller than the split, as on a large dataset
    decodes = []
    load = ds.load_resized
    ds.load_resized = lambda i: (decodes.append(i), load(i))[1]
    for i in range(4):  # warm the buffer
        ds[(i, i)]
    counts = []
    for i in range(4, 8):
        before = len(decodes)
        item = ds[(i, 100 + i)]
        counts.append(len(decodes) - before)
        assert_boxes_on_their_colour(item["image"], item["targets"])
    assert max(counts) <= max_decodes_per_item
    if partners == "seeded":
        assert max(counts) > 1  # partners are drawn from the whole split, buffer or not


def test_mosaic_partners_typo_is_a_config_error():
    from detector.config import ConfigError
    with pytest.raises(ConfigError, match="mosaic_partners"):
        AugmentConfig(mosaic_partners="buffered")
