"""YOLO head decoding and the loss's assignment, on hand-made raw outputs."""
from types import SimpleNamespace

import pytest
import torch

from detector.config import ConfigError
from detector.models.heads import COCO_ANCHORS, HeadConfig, YOLOHead
from detector.models.loss import LossConfig, YOLOLoss

NC = 3


def fake_model(scale_xy=2.0):
    head = YOLOHead(HeadConfig(anchors=COCO_ANCHORS, strides=(8, 16, 32), width=0, scale_xy=scale_xy),
                    [4, 4, 4], NC)
    return SimpleNamespace(head=head, num_classes=NC, strides=[8, 16, 32])


def zero_raw(batch=1, h=64, w=64):
    return [torch.zeros(batch, 3 * (5 + NC), h // s, w // s, requires_grad=True) for s in (8, 16, 32)]


def positives(loss, targets, shape=(64, 64)):
    gt = loss._flatten_targets(targets, torch.device("cpu"))
    out = []
    for level, s in enumerate((8, 16, 32)):
        b, a, gj, gi, *_ = loss._assign(gt, level, (1, 3, shape[0] // s, shape[1] // s, 5 + NC))
        out.append(sorted(zip(a.tolist(), gj.tolist(), gi.tolist())))
    return out


# a 16x30 box centred at (28.3, 20.2): stride-8 grid centre (3.54, 2.53) -> cell (gy 2, gx 3);
# nearer the right and bottom borders, so the neighbours are (2, 4) and (3, 3)
BOX = torch.tensor([[1.0, 20.3, 5.2, 36.3, 35.2]])


def test_assignment_single_cell_without_neighbours():
    loss = YOLOLoss(fake_model(), {"neighbor_cells": False})
    pos = positives(loss, [BOX])
    # every stride-8 anchor is within 4x of 16x30 (10x13, 16x30, 33x23): all three, centre cell
    assert pos[0] == [(0, 2, 3), (1, 2, 3), (2, 2, 3)]
    assert len(pos[1]) == 3  # 30x61 (1.9x), 62x45 (3.9x), 59x119 (3.97x) all < 4
    assert pos[2] == []  # 116x90 is 7.3x wider


def test_assignment_adds_the_two_nearest_neighbour_cells():
    loss = YOLOLoss(fake_model(), {})
    pos = positives(loss, [BOX])
    cells = {(gj, gi) for _, gj, gi in pos[0]}
    assert cells == {(2, 3), (2, 4), (3, 3)}
    assert len(pos[0]) == 9
    strict = YOLOLoss(fake_model(), {"anchor_ratio_thresh": 1.5})
    assert [a for a, _, _ in positives(strict, [BOX])[0]] == [1, 1, 1]  # only the 16x30 anchor


def test_no_neighbour_outside_the_grid():
    loss = YOLOLoss(fake_model(), {"anchor_ratio_thresh": 1.5})
    corner = torch.tensor([[0.0, 0.0, 0.0, 16.0, 30.0]])  # centre (8, 15): cell (1, 1), frac (0, .875)
    pos = positives(loss, [corner])
    assert all(0 <= gj < 8 and 0 <= gi < 8 for _, gj, gi in pos[0])


def test_perfect_prediction_has_zero_box_loss():
    # gt = anchor 1 of stride 8 (16x30) centred on cell (2, 3): zero logits decode to exactly it
    gt = [torch.tensor([[2.0, 20.0, 5.0, 36.0, 35.0]])]
    loss = YOLOLoss(fake_model(), {"anchor_ratio_thresh": 1.1, "neighbor_cells": False})
    total, parts = loss(zero_raw(), gt)
    assert parts["box"].abs().item() < 1e-6
    raw = zero_raw()
    with torch.no_grad():
        raw[0][0, 1 * (5 + NC) + 0, 2, 3] = 1.0  # shift the centre: box loss appears
    _, parts_shifted = loss(raw, gt)
    assert parts_shifted["box"].item() > 1e-3


def test_total_is_a_per_image_mean():
    torch.manual_seed(0)
    loss = YOLOLoss(fake_model(), {})
    raw1 = [torch.randn(1, 3 * (5 + NC), 64 // s, 96 // s) for s in (8, 16, 32)]
    raw2 = [torch.cat([r, r]) for r in raw1]
    targets = [torch.tensor([[0.0, 10, 10, 40, 50], [2.0, 50, 20, 90, 60]])]
    t1, p1 = loss(raw1, targets)
    t2, p2 = loss(raw2, targets * 2)
    torch.testing.assert_close(t1, t2)
    for k in ("box", "obj", "cls"):
        torch.testing.assert_close(p1[k], p2[k])


def test_empty_targets_give_objectness_only_and_gradients():
    loss = YOLOLoss(fake_model(), {})
    raw = zero_raw(batch=2)
    total, parts = loss(raw, [torch.zeros(0, 5), torch.zeros((0, 5))])
    assert parts["box"].item() == 0 and parts["cls"].item() == 0 and parts["obj"].item() > 0
    total.backward()
    assert raw[0].grad is not None and raw[0].grad.abs().sum() > 0


def test_label_smoothing_softens_class_targets():
    gt = [torch.tensor([[2.0, 20.0, 5.0, 36.0, 35.0]])]
    raw = zero_raw()
    with torch.no_grad():  # confident, correct class at the one positive slot
        raw[0][0, 1 * (5 + NC) + 5: 1 * (5 + NC) + 5 + NC, 2, 3] = torch.tensor([-12.0, -12.0, 12.0])
    hard = YOLOLoss(fake_model(), {"anchor_ratio_thresh": 1.1, "neighbor_cells": False})
    soft = YOLOLoss(fake_model(), {"anchor_ratio_thresh": 1.1, "neighbor_cells": False,
                                   "label_smoothing": 0.2})
    assert hard(raw, gt)[1]["cls"].item() < 1e-4
    assert soft(raw, gt)[1]["cls"].item() > 0.05


def test_bad_targets_and_configs_are_clear_errors():
    loss = YOLOLoss(fake_model(), {})
    with pytest.raises(ValueError, match="class ids"):
        loss(zero_raw(), [torch.tensor([[5.0, 0, 0, 10, 10]])])
    with pytest.raises(ValueError, match=r"shape \(n, 5\)"):
        loss(zero_raw(), [torch.zeros(2, 4)])
    with pytest.raises(ValueError, match="target tensors"):
        loss(zero_raw(batch=2), [torch.zeros(0, 5)])
    with pytest.raises(ConfigError, match="model.loss.box_gian.*did you mean 'box_gain'"):
        YOLOLoss(fake_model(), {"box_gian": 1.0})
    with pytest.raises(ConfigError, match="level_weights"):
        YOLOLoss(fake_model(), {"level_weights": [1.0, 1.0]})
    with pytest.raises(ConfigError, match="scale_xy"):
        YOLOLoss(fake_model(scale_xy=1.0), {"neighbor_cells": True})
    with pytest.raises(ConfigError, match="anchor_ratio_thresh"):
        LossConfig(anchor_ratio_thresh=1.0)


def test_head_config_validation():
    with pytest.raises(ConfigError, match="anchor levels"):
        HeadConfig(anchors=COCO_ANCHORS[:2], strides=(8, 16, 32))
    with pytest.raises(ConfigError, match="pairs"):
        HeadConfig(anchors=((10, 13, 16),) * 3)


def test_head_output_layout_and_prior_bias():
    head = YOLOHead(HeadConfig(width=16), [8, 8, 8], NC)
    raw = head([torch.zeros(2, 8, 64 // s, 32 // s) for s in (8, 16, 32)])
    assert [tuple(r.shape) for r in raw] == [(2, 24, 8, 4), (2, 24, 4, 2), (2, 24, 2, 1)]
    obj = torch.sigmoid(head.preds[0].bias.view(3, 5 + NC)[:, 4])
    assert (obj < 0.01).all()  # objectness starts near the true rate of objects per cell


def test_scale_gains_rescale_objectness_and_classes_to_the_run():
    """YOLOv5's rule: the class term x classes/80, objectness x (size/640)^2; box unchanged."""
    torch.manual_seed(0)
    raw = [torch.randn(1, 3 * (5 + NC), 64 // s, 64 // s) for s in (8, 16, 32)]
    targets = [torch.tensor([[0.0, 10, 10, 40, 50], [2.0, 30, 20, 60, 60]])]
    _, plain = YOLOLoss(fake_model(), {})(raw, targets)
    scaled_loss = YOLOLoss(fake_model(), {"scale_gains": True}, img_size=320)
    assert scaled_loss.gains == pytest.approx({"box": 0.05, "obj": 0.25, "cls": 0.5 * NC / 80})
    _, scaled = scaled_loss(raw, targets)
    torch.testing.assert_close(scaled["box"], plain["box"])
    torch.testing.assert_close(scaled["obj"], plain["obj"] * 0.25)
    torch.testing.assert_close(scaled["cls"], plain["cls"] * NC / 80)
    with pytest.raises(ValueError, match="img_size"):
        YOLOLoss(fake_model(), {"scale_gains": True})
