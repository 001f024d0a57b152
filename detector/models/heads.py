"""YOLO detection head: one 3x3 conv and one 1x1 prediction conv per level, and its decoding.

The prediction holds, for each of the level's anchors, ``(tx, ty, tw, th, objectness,
class_1..C)`` logits. Decoding lives here and is shared by the loss, so training and inference
(and the ONNX export, which runs :meth:`YOLOHead.decode`) can never disagree:

* centre: ``(sigmoid(t_xy) * scale_xy - (scale_xy - 1) / 2 + cell) * stride``, ``scale_xy``
  per level. 1 is YOLOv3's plain sigmoid (the centre stays inside its cell); darknet's later
  cfgs use 1.2 / 1.1 / 1.05 so centres can reach the cell borders; 2 (YOLOv5 / Scaled-YOLOv4)
  reaches -0.5..1.5 cells, what neighbour-cell assignment needs.
* size, ``decode``:
  - ``"yolov5"`` (default; the YOLOv5 / Scaled-YOLOv4 form): ``(2 * sigmoid(t_wh)) ** 2 *
    anchor``, bounded to 0..4x the anchor -- no overflow early in training, and it matches the
    loss's anchor-ratio threshold of 4;
  - ``"exp"`` (darknet's YOLOv3 form): ``exp(t_wh) * anchor``, unbounded (``t_wh`` is clipped
    at 10 so a diverging logit gives a huge box instead of ``inf``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Sequence, Tuple, Union

import torch
from torch import nn

from ..config import ConfigError
from .layers import ConvNormAct

# COCO anchors of YOLOv3 (pixels at 416), strides 8 | 16 | 32 (docs/paper.md).
COCO_ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))


DECODES = ("yolov5", "exp")
MAX_EXP_LOGIT = 10.0  # exp(10) = 22026x the anchor: far past any real box, still finite


AUTO_ANCHORS = "auto"


@dataclass
class HeadConfig:
    """YOLO head options (``model.head``).

    anchors: one flat list ``[w1, h1, w2, h2, ...]`` per level, in input pixels, finest first;
        ``auto`` = k-means on the training boxes at the training size, resolved by the trainer
        (the checkpoint stores the numbers).
    strides: output strides, one per level (must match the anchors).
    width: channels of each level's 3x3 conv (int or one per level); 0 = no 3x3 conv.
    scale_xy: grid-sensitivity factor of the centre decoding, a number or one per level
        (1 = YOLOv3; 1.2/1.1/1.05 = darknet's later cfgs; 2 = YOLOv5 / Scaled-YOLOv4).
    decode: box-size decoding, "yolov5" ((2 sigmoid)^2 * anchor, bounded) or "exp"
        (exp * anchor, darknet YOLOv3).
    act: activation of the 3x3 conv: a name or ``{name, negative_slope}`` (default darknet's
        leaky, slope 0.1, like the necks).
    """
    anchors: Tuple[Tuple[float, ...], ...] = COCO_ANCHORS
    strides: Tuple[int, ...] = (8, 16, 32)
    width: Union[int, Tuple[int, ...]] = 96
    scale_xy: Union[float, Tuple[float, ...]] = 2.0
    decode: str = "yolov5"
    act: Any = field(default_factory=lambda: {"name": "leaky_relu", "negative_slope": 0.1})

    def __post_init__(self):
        if self.anchors == AUTO_ANCHORS:
            raise ConfigError("model.head.anchors 'auto' is computed from the training data when "
                              "training starts; to build this model outside training give the "
                              "anchors (cspdet anchors --data X prints them)")
        if len(self.anchors) != len(self.strides):
            raise ConfigError(f"model.head: {len(self.anchors)} anchor levels but "
                              f"{len(self.strides)} strides")
        for level in self.anchors:
            if len(level) % 2 or not level:
                raise ConfigError(f"model.head.anchors: each level is a flat list of w,h pairs, got {list(level)}")
        if len({len(a) for a in self.anchors}) != 1:
            raise ConfigError("model.head.anchors: every level needs the same number of anchors")
        if self.decode not in DECODES:
            raise ConfigError(f"model.head.decode must be 'yolov5' ((2 sigmoid)^2 * anchor, the "
                              f"YOLOv5 / Scaled-YOLOv4 form) or 'exp' (exp * anchor, darknet "
                              f"YOLOv3), got '{self.decode}'")
        self.scale_xy_per_level()  # validates

    def scale_xy_per_level(self) -> List[float]:
        """``scale_xy`` as one float per level (a single number applies to every level)."""
        n = len(self.strides)
        value = self.scale_xy
        values = [value] * n if isinstance(value, (int, float)) else list(value)
        if len(values) != n or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                       for v in values):
            raise ConfigError(f"model.head.scale_xy must be a number or a list of {n} numbers "
                              f"(one per level, finest first), got {value!r}")
        if min(values) < 1:
            raise ConfigError(f"model.head.scale_xy must be >= 1 at every level, got {value!r}")
        return [float(v) for v in values]


class YOLOHead(nn.Module):
    """Per level: 3x3 ConvNormAct (``width``) -> 1x1 conv to ``A * (5 + C)`` outputs."""

    def __init__(self, cfg: HeadConfig, in_channels: Sequence[int], num_classes: int):
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"model.num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.strides = [int(s) for s in cfg.strides]
        self.scale_xy = cfg.scale_xy_per_level()  # one float per level
        self.decode_mode = cfg.decode
        self.num_anchors = len(cfg.anchors[0]) // 2
        self.num_outputs = 5 + num_classes
        anchors = torch.tensor(cfg.anchors, dtype=torch.float32).view(len(cfg.strides), -1, 2)
        self.register_buffer("anchors", anchors, persistent=False)  # (L, A, 2) pixels
        widths = cfg.width if not isinstance(cfg.width, int) else [cfg.width] * len(self.strides)
        if len(widths) != len(self.strides):
            raise ConfigError(f"model.head.width: need one value per level ({len(self.strides)}), got {list(widths)}")
        if len(in_channels) != len(self.strides):
            raise ConfigError(f"the neck gives {len(in_channels)} levels, the head has {len(self.strides)} strides")
        self.convs = nn.ModuleList(
            ConvNormAct(c, w, 3, act=cfg.act) if w else nn.Identity() for c, w in zip(in_channels, widths))
        self.preds = nn.ModuleList(
            nn.Conv2d(w or c, self.num_anchors * self.num_outputs, 1) for c, w in zip(in_channels, widths))
        self.init_biases()

    @torch.no_grad()
    def init_biases(self, image_size: int = 640):
        """Prior biases (YOLOv5): about 8 objects per image in objectness, 0.6 spread over classes.

        Starting objectness near its true rate keeps the first iterations' loss from being
        dominated by the many empty cells.
        """
        for pred, s in zip(self.preds, self.strides):
            b = pred.bias.view(self.num_anchors, self.num_outputs)
            b[:, 4] = math.log(8 / (image_size / s) ** 2)
            b[:, 5:] = math.log(0.6 / max(self.num_classes - 0.99, 0.01))

    def forward(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        return [pred(conv(f)) for f, conv, pred in zip(feats, self.convs, self.preds)]

    # ---- decoding ---------------------------------------------------------------------------

    def split_level(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, A*(5+C), H, W) -> (B, A, H, W, 5+C)."""
        b, _, h, w = raw.shape
        return raw.view(b, self.num_anchors, self.num_outputs, h, w).permute(0, 1, 3, 4, 2)

    def decode_xy(self, t_xy: torch.Tensor, level: int) -> torch.Tensor:
        """Logits -> centre offset within the cell (grid units), with the level's ``scale_xy``."""
        k = self.scale_xy[level]
        xy = torch.sigmoid(t_xy)
        return xy if k == 1 else xy * k - (k - 1) / 2

    def decode_wh(self, t_wh: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """Logits -> box size in the units of ``anchors``: (2 sigmoid)^2 * anchor or exp * anchor."""
        if self.decode_mode == "exp":
            return torch.exp(t_wh.clamp(max=MAX_EXP_LOGIT)) * anchors
        return (torch.sigmoid(t_wh) * 2) ** 2 * anchors

    def level_boxes(self, p: torch.Tensor, level: int) -> torch.Tensor:
        """Split level ``(B, A, H, W, 5+C)`` -> boxes ``(B, A, H, W, 4)``, xyxy input pixels."""
        _, _, h, w, _ = p.shape
        gy, gx = torch.meshgrid(torch.arange(h, device=p.device, dtype=p.dtype),
                                torch.arange(w, device=p.device, dtype=p.dtype), indexing="ij")
        grid = torch.stack((gx, gy), -1)  # (H, W, 2)
        stride = self.strides[level]
        xy = (self.decode_xy(p[..., :2], level) + grid) * stride
        wh = self.decode_wh(p[..., 2:4], self.anchors[level].to(p.dtype).view(1, -1, 1, 1, 2))
        return torch.cat((xy - wh / 2, xy + wh / 2), -1)

    def decode(self, raw: Sequence[torch.Tensor]) -> torch.Tensor:
        """Raw level outputs -> (B, N, 5+C): xyxy input pixels, objectness prob, class probs."""
        out = []
        for level, x in enumerate(raw):
            p = self.split_level(x)
            box = self.level_boxes(p, level)
            probs = torch.sigmoid(p[..., 4:])
            out.append(torch.cat((box, probs), -1).reshape(x.shape[0], -1, self.num_outputs))
        return torch.cat(out, 1)
