"""Letterbox and its inverse must be exact: every box shown to a user goes through them."""
import numpy as np
import pytest
import torch

from detector.data.letterbox import letterbox, unletterbox_boxes


@pytest.mark.parametrize("shape,size", [((480, 640, 3), 320), ((100, 50, 3), (96, 160)),
                                        ((37, 53, 3), 100), ((64, 64), 64)])
def test_output_shape_is_multiple_of_32(shape, size):
    img = np.full(shape, 200, np.uint8)
    out, ratio, (left, top) = letterbox(img, size)
    th, tw = (size, size) if isinstance(size, int) else size
    assert out.shape[0] == -(-th // 32) * 32 and out.shape[1] == -(-tw // 32) * 32
    assert out.ndim == 3
    # the image sits centred inside the padding
    assert out[int(top) + 1, int(left) + 1, 0] == 200


def test_roundtrip_boxes():
    img = np.zeros((480, 640, 3), np.uint8)
    out, ratio, pad = letterbox(img, 320)
    boxes = np.array([[10, 20, 300, 400], [0, 0, 640, 480]], np.float32)
    left, top = pad
    net = boxes * ratio + np.array([left, top, left, top], np.float32)
    back = unletterbox_boxes(net, ratio, pad, img.shape)
    np.testing.assert_allclose(back, boxes, atol=1e-3)
    back_t = unletterbox_boxes(torch.from_numpy(net), ratio, pad, img.shape)
    assert isinstance(back_t, torch.Tensor)
    np.testing.assert_allclose(back_t.numpy(), boxes, atol=1e-3)


def test_boxes_clipped_to_image():
    back = unletterbox_boxes(np.array([[-50, -50, 1000, 1000]], np.float32), 0.5, (0, 40), (480, 640))
    np.testing.assert_allclose(back, [[0, 0, 640, 480]])
