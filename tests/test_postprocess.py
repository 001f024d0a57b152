"""Decode + NMS of hand-made raw predictions gives exactly the expected boxes."""
import math

import pytest
import torch

from detector.models.heads import HeadConfig, YOLOHead
from detector.models.postprocess import postprocess

NC = 2
ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))


def logit(p):
    return math.log(p / (1 - p))


def wh_logit(target, anchor):
    """Inverse of the head's size decoding: (2 sigmoid(t))^2 * anchor = target."""
    return logit(math.sqrt(target / anchor) / 2)


def xy_logit(offset):
    """Inverse of the grid-sensitive centre decoding with scale_xy = 2."""
    return logit((offset + 0.5) / 2)


def make_head():
    return YOLOHead(HeadConfig(anchors=ANCHORS, strides=(8, 16, 32), width=0), [4, 4, 4], NC)


def empty_raw(batch=2, size=64):
    """Raw outputs where nothing is an object (objectness logit -20)."""
    raw = []
    for s in (8, 16, 32):
        r = torch.zeros(batch, 3, 5 + NC, size // s, size // s)
        r[:, :, 4] = -20.0
        r[:, :, 5:] = -20.0
        raw.append(r)
    return raw


def put(raw, img, level, anchor, gy, gx, offset, wh, obj, cls, cls_p):
    a_w, a_h = ANCHORS[level][2 * anchor], ANCHORS[level][2 * anchor + 1]
    r = raw[level][img, anchor, :, gy, gx]
    r[0], r[1] = xy_logit(offset[0]), xy_logit(offset[1])
    r[2], r[3] = wh_logit(wh[0], a_w), wh_logit(wh[1], a_h)
    r[4] = logit(obj)
    r[5 + cls] = logit(cls_p)


def flat(raw):
    return [r.reshape(r.shape[0], -1, r.shape[3], r.shape[4]) for r in raw]


def scene():
    raw = empty_raw()
    # A: stride 8, cell (gy=2, gx=3), anchor 1 = its own size 16x30, centre of the cell -> (28, 20)
    put(raw, 0, 0, 1, 2, 3, (0.5, 0.5), (16, 30), 0.95, 1, 0.95)
    # B: same class, centre (30, 20): IoU with A = 420/540 = 0.78 -> suppressed by NMS
    put(raw, 0, 0, 0, 2, 3, (0.75, 0.5), (16, 30), 0.9, 1, 0.9)
    # C: class 0 at (26, 20): overlaps A as much but another class -> kept (class-aware NMS)
    put(raw, 0, 0, 2, 2, 3, (0.25, 0.5), (16, 30), 0.8, 0, 0.9)
    # D: stride 32, cell (0, 1), anchor 0 at its own size 116x90, centre (48, 16)
    put(raw, 0, 2, 0, 0, 1, (0.5, 0.5), (116, 90), 0.7, 0, 0.9)
    # E: below the confidence threshold
    put(raw, 0, 1, 2, 3, 0, (0.5, 0.5), (62, 45), 0.2, 0, 0.9)
    return flat(raw)


def test_decode_maps_logits_to_pixels_exactly():
    head = make_head()
    decoded = head.decode(scene())
    assert decoded.shape == (2, 3 * (8 * 8 + 4 * 4 + 2 * 2), 5 + NC)
    # level 0, anchor 1, cell (2, 3) -> index 1 * 64 + 2 * 8 + 3
    a = decoded[0, 64 + 19]
    torch.testing.assert_close(a[:4], torch.tensor([20.0, 5.0, 36.0, 35.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(a[4:], torch.tensor([0.95, 0.0, 0.95]), atol=1e-6, rtol=0)


def test_zero_logits_decode_to_anchor_at_cell_centre():
    head = make_head()
    raw = [torch.zeros(1, 3 * (5 + NC), 64 // s, 96 // s) for s in (8, 16, 32)]
    decoded = head.decode(raw)
    assert decoded.shape[1] == 3 * (8 * 12 + 4 * 6 + 2 * 3)
    last = decoded[0, -1]  # stride 32, anchor 2 (373x326), cell (1, 2) -> centre (80, 48)
    torch.testing.assert_close(last[:4], torch.tensor([80 - 186.5, 48 - 163.0, 80 + 186.5, 48 + 163.0]))


def test_nms_keeps_exactly_the_expected_boxes():
    decoded = make_head().decode(scene())
    out = postprocess(decoded, conf_thres=0.25, iou_thres=0.45, max_det=300)
    assert len(out) == 2
    det = out[0]
    expected = torch.tensor([[20.0, 5.0, 36.0, 35.0],    # A
                             [18.0, 5.0, 34.0, 35.0],    # C
                             [-10.0, -29.0, 106.0, 61.0]])  # D
    torch.testing.assert_close(det["boxes"], expected, atol=1e-3, rtol=0)
    torch.testing.assert_close(det["scores"], torch.tensor([0.95 * 0.95, 0.8 * 0.9, 0.7 * 0.9]),
                               atol=1e-5, rtol=0)
    assert det["labels"].tolist() == [1, 0, 0]
    assert det["labels"].dtype == torch.long
    assert out[1]["boxes"].shape == (0, 4) and out[1]["scores"].numel() == 0


def test_max_det_and_conf_threshold():
    decoded = make_head().decode(scene())
    det = postprocess(decoded, conf_thres=0.25, iou_thres=0.45, max_det=2)[0]
    assert det["labels"].tolist() == [1, 0] and det["boxes"].shape == (2, 4)
    det = postprocess(decoded, conf_thres=0.7, iou_thres=0.45)[0]
    assert det["labels"].tolist() == [1, 0]  # A 0.9025 and C 0.72; D (0.63) filtered
    det = postprocess(decoded, conf_thres=0.1, iou_thres=0.45)[0]
    assert len(det["scores"]) == 4  # E (0.18) now passes


def test_multi_label_keeps_second_class_of_a_box():
    raw = empty_raw(batch=1)
    put(raw, 0, 0, 1, 2, 3, (0.5, 0.5), (16, 30), 0.9, 1, 0.9)
    raw[0][0, 1, 5, 2, 3] = logit(0.8)  # the same box is also class 0 with p = 0.8
    decoded = make_head().decode(flat(raw))
    single = postprocess(decoded, 0.25, 0.45)[0]
    multi = postprocess(decoded, 0.25, 0.45, multi_label=True)[0]
    assert single["labels"].tolist() == [1]
    assert multi["labels"].tolist() == [1, 0]
    torch.testing.assert_close(multi["boxes"][0], multi["boxes"][1])


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="B, N, 5\\+C"):
        postprocess(torch.zeros(10, 7), 0.25, 0.45)
