"""YOLO loss: BCE objectness and class terms plus a CIoU box term, in two assignment forms.

``assign: yolov5`` (default; the YOLOv5 / Scaled-YOLOv4 form, what trains best here): per
level, a ground truth is given to **every** anchor of the level whose shape matches it within
``anchor_ratio_thresh`` (max over w and h of max(r, 1/r), r = gt / anchor), in the cell holding
its centre and, with ``neighbor_cells``, in the two neighbouring cells closest to the centre
(it needs the head's ``scale_xy = 2`` so that a neighbour's prediction can reach the centre).
Many positives per object speed training up.

``assign: yolov3`` (darknet's YOLOv3 form, the assignment the CSPNet paper's EFM is designed
around): each ground truth goes to its **single** best anchor by shape IoU over all levels, in
the cell holding its centre; any other prediction whose decoded box overlaps a ground truth of
its image by more than ``ignore_thresh`` (0.7, darknet's) gets no objectness loss, so a good
second box is not pushed towards "no object".

Both: the box term is ``1 - CIoU`` (``torchvision.ops.complete_box_iou_loss``) over positives
(darknet's YOLOv3 used MSE on the logits; CIoU is kept for both forms); the objectness target
of a positive is its (detached) IoU, mixed with 1 by ``obj_iou_ratio``. Every choice is a field
of :class:`LossConfig`, documented there and in docs/detector.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou, complete_box_iou_loss

from ..config import ConfigError, from_dict


ASSIGNS = ("yolov5", "yolov3")
YOLOV3_IGNORE_THRESH = 0.7  # darknet's ignore_thresh in its yolov3 cfgs
GAINS_TUNED_FOR = {"num_classes": 80, "img_size": 640}  # the setting the default gains suit (YOLOv5's)


@dataclass
class LossConfig:
    """Loss options (``model.loss``); the one place every choice of the loss is named.

    assign: "yolov5" (every anchor within ``anchor_ratio_thresh``, on every level, plus
        neighbour cells: the YOLOv5 / Scaled-YOLOv4 form) or "yolov3" (one best-IoU anchor over
        all levels per ground truth, objectness ignored above ``ignore_thresh``: darknet YOLOv3).
    box_gain, obj_gain, cls_gain: weights of the three terms in the total (YOLOv5's values
        at 640 px and 80 classes; they are *not* rescaled automatically with image size or
        class count).
    level_weights: objectness weight of each level, finest first (YOLOv5's 4, 1, 0.4: the
        fine levels have many more empty cells, so their mean BCE is smaller).
    anchor_ratio_thresh: (yolov5 assignment) an anchor is positive for a ground truth when both
        w and h ratios lie within [1/t, t]; 4 matches the head's size range of 0..4x the anchor.
    neighbor_cells: also assign the two neighbouring cells nearest the centre (3 cells per
        matching anchor instead of 1); null = the assignment's own rule (yolov5: true, yolov3:
        false); true with yolov3 is refused. neighbor_margin: how close (in cells, < 0.5 means
        "nearer that border") the centre must be to a border for its neighbour to be used.
    ignore_thresh: a non-positive prediction whose box has IoU > this with a ground truth of
        its image gets no objectness loss; null = the assignment's own rule (yolov3: 0.7,
        yolov5: never); 1 = never.
    obj_iou_ratio: objectness target of a positive = (1 - r) + r * IoU(pred, gt) (0 = hard 1).
    label_smoothing: class targets become 1 - eps/2 and eps/2.
    obj_pos_weight, cls_pos_weight: BCE ``pos_weight`` of the positives.
    scale_gains: rescale the gains from the setting they were tuned for (80 classes at 640 px)
        to the run's, YOLOv5's rule: ``cls_gain * num_classes / 80`` (the class term is a mean
        over classes, so with few classes each one weighs more) and ``obj_gain * (img_size /
        640) ** 2`` (the objectness mean covers fewer cells at a smaller input). On BCCD (3
        classes, 416 px: cls 0.019, obj 0.42) it raised test AP by about 4 points at the same
        budget (benchmarks/RESULTS.md, "Small-data recipe").

    Fixed (not options): box and class terms are means over a level's positives, averaged over
    the levels that have any; objectness is a mean over all cells of a level (ignored cells
    count as zero); where several ground truths share one (anchor, cell) slot, the highest-IoU
    one sets its objectness target.
    """
    assign: str = "yolov5"
    box_gain: float = 0.05
    obj_gain: float = 1.0
    cls_gain: float = 0.5
    level_weights: Tuple[float, ...] = (4.0, 1.0, 0.4)
    anchor_ratio_thresh: float = 4.0
    neighbor_cells: Optional[bool] = None
    neighbor_margin: float = 0.5
    ignore_thresh: Optional[float] = None
    obj_iou_ratio: float = 1.0
    label_smoothing: float = 0.0
    obj_pos_weight: float = 1.0
    cls_pos_weight: float = 1.0
    scale_gains: bool = False

    def __post_init__(self):
        if self.assign not in ASSIGNS:
            raise ConfigError(f"model.loss.assign must be 'yolov5' (every anchor within the ratio "
                              f"threshold, plus neighbour cells) or 'yolov3' (one best anchor per "
                              f"ground truth), got '{self.assign}'")
        if self.anchor_ratio_thresh <= 1:
            raise ConfigError(f"model.loss.anchor_ratio_thresh must be > 1, got {self.anchor_ratio_thresh}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"model.loss.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0 <= self.obj_iou_ratio <= 1:
            raise ConfigError(f"model.loss.obj_iou_ratio must be in [0, 1], got {self.obj_iou_ratio}")
        if self.ignore_thresh is not None and not 0 < self.ignore_thresh <= 1:
            raise ConfigError(f"model.loss.ignore_thresh must be in (0, 1] (1 = never ignore), "
                              f"got {self.ignore_thresh}")
        if self.neighbor_cells is not None and not isinstance(self.neighbor_cells, bool):
            raise ConfigError(f"model.loss.neighbor_cells must be true, false or null, got {self.neighbor_cells!r}")
        if self.assign == "yolov3" and self.neighbor_cells:
            raise ConfigError("model.loss.neighbor_cells: true does not go with model.loss.assign: "
                              "yolov3, which gives each ground truth one prediction; set "
                              "model.loss.neighbor_cells=false (or null)")

    @property
    def use_neighbors(self) -> bool:
        """Neighbour cells in effect (``neighbor_cells``, or the assignment's own rule)."""
        return self.assign == "yolov5" if self.neighbor_cells is None else self.neighbor_cells

    @property
    def ignore_iou(self) -> float:
        """Objectness-ignore threshold in effect (> 1 = never)."""
        if self.ignore_thresh is not None:
            return self.ignore_thresh
        return YOLOV3_IGNORE_THRESH if self.assign == "yolov3" else 2.0


class YOLOLoss(nn.Module):
    """``loss(raw, targets) -> (total, {"box", "obj", "cls"})`` for a :class:`Detector`.

    ``targets``: one float tensor (n, 5) ``[class, x1, y1, x2, y2]`` (input pixels) per image.
    Every term is a mean (over positives, or over all cells for objectness), so ``total`` is a
    per-image mean that does not grow with the batch size.
    """

    def __init__(self, model, cfg=None, img_size: Optional[int] = None):
        super().__init__()
        self.cfg = from_dict(LossConfig, cfg if cfg is not None else getattr(model, "loss_cfg", None), "model.loss")
        self.head = model.head
        self.num_classes = model.num_classes
        self.gains = self._gains(img_size)
        self.strides = list(model.strides)
        if len(self.cfg.level_weights) != len(self.strides):
            raise ConfigError(f"model.loss.level_weights needs {len(self.strides)} values (one per "
                              f"level), got {list(self.cfg.level_weights)}")
        if self.cfg.use_neighbors and min(self.head.scale_xy) < 2:
            raise ConfigError("model.loss.neighbor_cells (on by default with assign: yolov5) needs "
                              "model.head.scale_xy >= 2 at every level so that a neighbouring cell "
                              "can predict the centre; set model.loss.neighbor_cells=false for a "
                              f"smaller scale_xy (got {self.head.scale_xy})")

    def _gains(self, img_size: Optional[int]) -> Dict[str, float]:
        """The box / obj / cls gains in effect (``scale_gains`` applied for ``img_size``)."""
        cfg = self.cfg
        gains = {"box": cfg.box_gain, "obj": cfg.obj_gain, "cls": cfg.cls_gain}
        if cfg.scale_gains:
            if not img_size:
                raise ValueError("model.loss.scale_gains needs the training input size: "
                                 "YOLOLoss(model, img_size=...)")
            gains["obj"] *= (img_size / GAINS_TUNED_FOR["img_size"]) ** 2
            gains["cls"] *= self.num_classes / GAINS_TUNED_FOR["num_classes"]
        return gains

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
            obj_weight = self._objectness_weight(p, level, gt)
            if b.numel():
                if obj_weight is not None:
                    obj_weight[b, a, gj, gi] = 1.0  # positives always count
                ps = p[b, a, gj, gi]
                pxy = self.head.decode_xy(ps[:, :2], level)
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
                p[..., 4], tobj, weight=obj_weight, pos_weight=pos_w_obj)
        # box/cls: mean over the levels that had positives (so one level is not diluted by others)
        if n_pos_levels:
            lbox, lcls = lbox / n_pos_levels, lcls / n_pos_levels
        g = self.gains
        parts = {"box": g["box"] * lbox, "obj": g["obj"] * lobj, "cls": g["cls"] * lcls}
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

    @torch.no_grad()
    def _objectness_weight(self, p: torch.Tensor, level: int, gt: torch.Tensor) -> Optional[torch.Tensor]:
        """(B, A, H, W) 0/1 weights: 0 where a prediction overlaps a ground truth of its image by
        more than ``ignore_thresh`` (darknet YOLOv3's ignore rule), else 1; None = no ignoring."""
        thresh = self.cfg.ignore_iou
        if thresh > 1 or gt.shape[0] == 0:
            return None
        boxes = self.head.level_boxes(p.detach(), level)  # (B, A, H, W, 4) pixels
        weight = torch.ones(p.shape[:4], device=p.device)
        gt_xyxy = torch.cat((gt[:, 2:4] - gt[:, 4:6] / 2, gt[:, 2:4] + gt[:, 4:6] / 2), 1)
        for i in gt[:, 0].unique().long().tolist():
            best = box_iou(boxes[i].reshape(-1, 4), gt_xyxy[gt[:, 0] == i]).amax(1)
            weight[i] = (best <= thresh).view(weight.shape[1:]).float()
        return weight

    def _best_anchors(self, gt: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """YOLOv3: (level, anchor) of each ground truth's best anchor by shape IoU over all levels
        (boxes and anchors aligned at one centre, as darknet does)."""
        anchors = self.head.anchors.to(gt.device).reshape(-1, 2)  # (L*A, 2) pixels
        wh = gt[:, None, 4:6]
        inter = torch.min(wh, anchors[None]).prod(2)
        iou = inter / (wh.prod(2) + anchors.prod(1)[None] - inter)
        best = iou.argmax(1)  # first on ties: the finer level
        return best // self.head.num_anchors, best % self.head.num_anchors

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
        if cfg.assign == "yolov3":
            best_level, best_anchor = self._best_anchors(gt)
            t_idx = (best_level == level).nonzero(as_tuple=True)[0]
            a_idx = best_anchor[t_idx]
        else:
            ratio = g[None, :, 2:4] / anchors[:, None]  # (A, N, 2)
            match = torch.max(ratio, 1 / ratio).amax(2) < cfg.anchor_ratio_thresh  # (A, N)
            a_idx, t_idx = match.nonzero(as_tuple=True)
        gxy = g[t_idx, :2]
        offsets = [torch.zeros_like(gxy)]
        keeps = [torch.ones(len(t_idx), dtype=torch.bool, device=device)]
        if cfg.use_neighbors:
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
