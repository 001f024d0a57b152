"""YOLO loss: BCE objectness and class terms plus a CIoU box term, YOLOv4-style assignment.

Assignment (per level): a ground truth is given to **every** anchor of the level whose shape
matches it within ``anchor_ratio_thresh`` (max over w and h of max(r, 1/r), r = gt / anchor),
in the cell holding its centre and, with ``neighbor_cells``, in the two neighbouring cells
closest to the centre (YOLOv5's rule; it needs the head's ``scale_xy = 2`` so that a
neighbour's prediction can reach the centre). Many positives per object speed training up
compared with YOLOv3's single best prior.

The box term is ``1 - CIoU`` (``torchvision.ops.complete_box_iou_loss``) over positives; the
objectness target of a positive is its (detached) IoU, mixed with 1 by ``obj_iou_ratio``.
Every choice is a field of :class:`LossConfig`, documented there and in docs/detector.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou, complete_box_iou_loss

from ..config import ConfigError, from_dict


@dataclass
class LossConfig:
    """Loss options (``model.loss``); the one place every choice of the loss is named.

    box_gain, obj_gain, cls_gain: weights of the three terms in the total (YOLOv5's values
        at 640 px and 80 classes; they are *not* rescaled automatically with image size or
        class count).
    level_weights: objectness weight of each level, finest first (YOLOv5's 4, 1, 0.4: the
        fine levels have many more empty cells, so their mean BCE is smaller).
    anchor_ratio_thresh: an anchor is positive for a ground truth when both w and h ratios
        lie within [1/t, t]; 4 matches the head's size range of 0..4x the anchor.
    neighbor_cells: also assign the two neighbouring cells nearest the centre (3 cells per
        matching anchor instead of 1); neighbor_margin: how close (in cells, < 0.5 means
        "nearer that border") the centre must be to a border for its neighbour to be used.
    obj_iou_ratio: objectness target of a positive = (1 - r) + r * IoU(pred, gt) (0 = hard 1).
    label_smoothing: class targets become 1 - eps/2 and eps/2.
    obj_pos_weight, cls_pos_weight: BCE ``pos_weight`` of the positives.

    Fixed (not options): box and class terms are means over a level's positives, averaged over
    the levels that have any; objectness is a mean over all cells of a level; where several
    ground truths share one (anchor, cell) slot, the highest-IoU one sets its objectness target.
    """
    box_gain: float = 0.05
    obj_gain: float = 1.0
    cls_gain: float = 0.5
    level_weights: Tuple[float, ...] = (4.0, 1.0, 0.4)
    anchor_ratio_thresh: float = 4.0
    neighbor_cells: bool = True
    neighbor_margin: float = 0.5
    obj_iou_ratio: float = 1.0
    label_smoothing: float = 0.0
    obj_pos_weight: float = 1.0
    cls_pos_weight: float = 1.0

    def __post_init__(self):
        if self.anchor_ratio_thresh <= 1:
            raise ConfigError(f"model.loss.anchor_ratio_thresh must be > 1, got {self.anchor_ratio_thresh}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"model.loss.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.obj_iou_ratio <= 1:
            raise ConfigError(f"model.loss.obj_iou_ratio must be in [0, 1], got {self.obj_iou_ratio}")


class YOLOLoss(nn.Module):
    """``loss(raw, targets) -> (total, {"box", "obj", "cls"})`` for a :class:`Detector`.

    ``targets``: one float tensor (n, 5) ``[class, x1, y1, x2, y2]`` (input pixels) per image.
    Every term is a mean (over positives, or over all cells for objectness), so ``total`` is a
    per-image mean that does not grow with the batch size.
    """

    def __init__(self, model, cfg=None):
        super().__init__()
        self.cfg = from_dict(LossConfig, cfg if cfg is not None else getattr(model, "loss_cfg", None), "model.loss")
        self.head = model.head
        self.num_classes = model.num_classes
        self.strides = list(model.strides)
        if len(self.cfg.level_weights) != len(self.strides):
            raise ConfigError(f"model.loss.level_weights needs {len(self.strides)} values (one per "
                              f"level), got {list(self.cfg.level_weights)}")
        if self.cfg.neighbor_cells and self.head.scale_xy < 2:
            raise ConfigError("model.loss.neighbor_cells needs model.head.scale_xy >= 2 so that a "
                              "neighbouring cell can predict the centre")

    def forward(self, raw: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]
                ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        cfg = self.cfg
        if len(raw) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} levels of raw outputs, got {len(raw)}")
        if len(targets) != raw[0].shape[0]:
            raise ValueError(f"{len(targets)} target tensors for a batch of {raw[0].shape[0]} images")
        device, dtype = raw[0].device, raw[0].dtype
        gt = self._flatten_targets(targets, device)
        zero = torch.zeros((), device=device)
        lbox, lobj, lcls = zero.clone(), zero.clone(), zero.clone()
        n_pos_levels = 0
        smooth = cfg.label_smoothing
        pos_w_obj = torch.tensor(cfg.obj_pos_weight, device=device)
        pos_w_cls = torch.tensor(cfg.cls_pos_weight, device=device)
        for level, x in enumerate(raw):
            p = self.head.split_level(x).float()  # (B, A, H, W, 5+C)
            tobj = torch.zeros(p.shape[:4], device=device)
            b, a, gj, gi, tbox, tcls, anchors = self._assign(gt, level, p.shape)
            if b.numel():
                ps = p[b, a, gj, gi]
                pxy = self.head.decode_xy(ps[:, :2])
                pwh = self.head.decode_wh(ps[:, 2:4], anchors)
                pbox = torch.cat((pxy - pwh / 2, pxy + pwh / 2), 1)
                tb = torch.cat((tbox[:, :2] - tbox[:, 2:] / 2, tbox[:, :2] + tbox[:, 2:] / 2), 1)
                box_loss = complete_box_iou_loss(pbox, tb, reduction="none")
                lbox = lbox + box_loss.mean()
                iou = (1.0 - box_loss).detach().clamp(0, 1)  # CIoU <= IoU; a cheap, stable target
                # highest IoU written last, so it wins where several targets share a slot
                order = iou.argsort()
                r = cfg.obj_iou_ratio
                tobj[b[order], a[order], gj[order], gi[order]] = (1 - r) + r * iou[order]
                t = torch.full_like(ps[:, 5:], smooth / 2)
                t[torch.arange(len(tcls), device=device), tcls] = 1 - smooth / 2
                lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 5:], t, pos_weight=pos_w_cls)
                n_pos_levels += 1
            lobj = lobj + cfg.level_weights[level] * F.binary_cross_entropy_with_logits(
                p[..., 4], tobj, pos_weight=pos_w_obj)
        # box/cls: mean over the levels that had positives (so one level is not diluted by others)
        if n_pos_levels:
            lbox, lcls = lbox / n_pos_levels, lcls / n_pos_levels
        parts = {"box": cfg.box_gain * lbox, "obj": cfg.obj_gain * lobj, "cls": cfg.cls_gain * lcls}
        total = parts["box"] + parts["obj"] + parts["cls"]
        return total.to(dtype), {k: v.detach() for k, v in parts.items()}

    # ---- assignment -------------------------------------------------------------------------

    def _flatten_targets(self, targets, device) -> torch.Tensor:
        """List of (n, 5) [cls, x1, y1, x2, y2] -> (N, 6) [img, cls, cx, cy, w, h], pixels."""
        rows = []
        for i, t in enumerate(targets):
            t = torch.as_tensor(t, dtype=torch.float32, device=device)
            if t.numel() == 0:
                continue
            if t.ndim != 2 or t.shape[1] != 5:
                raise ValueError(f"targets[{i}] must have shape (n, 5) [class, x1, y1, x2, y2], got {tuple(t.shape)}")
            if (t[:, 0] < 0).any() or (t[:, 0] >= self.num_classes).any():
                raise ValueError(f"targets[{i}] has class ids outside [0, {self.num_classes})")
            wh = t[:, 3:5] - t[:, 1:3]
            keep = (wh > 0).all(1)
            cxcy = (t[:, 1:3] + t[:, 3:5]) / 2
            img = torch.full((len(t), 1), float(i), device=device)
            rows.append(torch.cat((img, t[:, :1], cxcy, wh), 1)[keep])
        if not rows:
            return torch.zeros((0, 6), device=device)
        return torch.cat(rows, 0)

    def _assign(self, gt: torch.Tensor, level: int, shape):
        """Positives of one level: (img, anchor, gj, gi), box target (offset xy, wh in grid
        units relative to the cell), class, and the matched anchors (grid units)."""
        cfg = self.cfg
        device = gt.device
        _, na, h, w, _ = shape
        stride = self.strides[level]
        anchors = self.head.anchors[level].to(device) / stride  # (A, 2) grid units
        empty = torch.zeros(0, dtype=torch.long, device=device)
        if gt.shape[0] == 0:
            return empty, empty, empty, empty, torch.zeros((0, 4), device=device), empty, torch.zeros((0, 2), device=device)
        g = gt[:, 2:6] / stride  # cx, cy, w, h in grid units
        ratio = g[None, :, 2:4] / anchors[:, None]  # (A, N, 2)
        match = torch.max(ratio, 1 / ratio).amax(2) < cfg.anchor_ratio_thresh  # (A, N)
        a_idx, t_idx = match.nonzero(as_tuple=True)
        gxy = g[t_idx, :2]
        offsets = [torch.zeros_like(gxy)]
        keeps = [torch.ones(len(t_idx), dtype=torch.bool, device=device)]
        if cfg.neighbor_cells:
            m = cfg.neighbor_margin
            frac = gxy % 1
            inv = torch.tensor([w, h], device=device, dtype=gxy.dtype) - gxy
            left_up = (frac < m) & (gxy > 1)           # use the cell to the left / above
            right_down = ((inv % 1) < m) & (inv > 1)   # use the cell to the right / below
            for dim in (0, 1):
                for mask, sign in ((left_up, 1.0), (right_down, -1.0)):
                    off = torch.zeros_like(gxy)
                    off[:, dim] = sign  # one full cell
                    offsets.append(off)
                    keeps.append(mask[:, dim])
        sel_a, sel_t, sel_xy = [], [], []
        for off, keep in zip(offsets, keeps):
            sel_a.append(a_idx[keep])
            sel_t.append(t_idx[keep])
            sel_xy.append(gxy[keep] - off[keep])
        a_idx, t_idx, cell_xy = torch.cat(sel_a), torch.cat(sel_t), torch.cat(sel_xy)
        gij = cell_xy.long()
        gi = gij[:, 0].clamp(0, w - 1)
        gj = gij[:, 1].clamp(0, h - 1)
        tgt = g[t_idx]
        tbox = torch.cat((tgt[:, :2] - torch.stack((gi, gj), 1).to(tgt.dtype), tgt[:, 2:4]), 1)
        return (gt[t_idx, 0].long(), a_idx, gj, gi, tbox, gt[t_idx, 1].long(), anchors[a_idx])
