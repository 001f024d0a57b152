"""The detector: backbone -> neck -> YOLO head, built from a config's ``model`` section.

``forward`` returns the raw per-level head outputs in every mode (training, eval, export), so
the exported graph is plain convolutions; :meth:`Detector.decode` and
:func:`detector.models.postprocess.postprocess` turn them into boxes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import torch
from torch import nn

from ..config import ConfigError, find_config, from_dict, to_dict
from .heads import HeadConfig, YOLOHead
from .loss import LossConfig
from .necks import build_neck, parse_neck_config


@dataclass
class ModelConfig:
    """A detector's ``model`` section.

    num_classes: number of classes (the trainer overwrites it from the data's names).
    backbone: inline backbone options (``{arch: csppeleenet, ...}``) or a path to a backbone
        YAML (``configs/backbones/csppeleenet.yaml``; relative paths are tried from the current
        folder, then from the repository root).
    backbone_weights: optional ImageNet checkpoint of the backbone; stored only -- the trainer
        loads it at the start of training (``load_pretrained_backbone``), never ``build_detector``.
    neck: neck options, ``type`` = efm | gfm | panet (see :mod:`detector.models.necks`).
    head: :class:`HeadConfig`; loss: :class:`LossConfig`.
    """
    backbone: Any = None
    neck: Any = None
    num_classes: int = 80
    backbone_weights: Optional[str] = None
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)


def resolve_backbone_config(backbone) -> dict:
    """Inline, fully merged backbone options from a dict or a YAML path (its ``model`` section).

    Inlining makes ``Detector.config`` (saved in checkpoints) independent of the config files.
    """
    from .backbones import resolve_backbone_config as resolve

    if isinstance(backbone, (str, Path)):
        try:
            backbone = str(find_config(backbone))
        except ConfigError as e:
            raise ConfigError(f"model.backbone: backbone {e}") from None
    elif not isinstance(backbone, dict):
        raise ConfigError("model.backbone must be a mapping of backbone options or a path to a "
                          f"backbone YAML, got {type(backbone).__name__}")
    return resolve(backbone)


class Detector(nn.Module):
    """Backbone + neck + head. Input: float (B, 3, H, W) RGB in [0, 1], H, W multiples of 32."""

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: YOLOHead,
                 config: Optional[dict] = None, loss_cfg: Optional[LossConfig] = None,
                 backbone_weights: Optional[str] = None):
        super().__init__()
        self.backbone, self.neck, self.head = backbone, neck, head
        self.num_classes = head.num_classes
        self.strides = list(head.strides)
        self.config = config or {}
        self.loss_cfg = loss_cfg or LossConfig()
        self.backbone_weights = backbone_weights

    @property
    def anchors(self) -> torch.Tensor:
        """(levels, anchors per level, 2) anchor sizes in input pixels."""
        return self.head.anchors

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"Detector expects a (B, 3, H, W) RGB batch, got {tuple(x.shape)}")
        step = max(self.strides)
        if x.shape[2] % step or x.shape[3] % step:
            raise ValueError(f"input height and width must be multiples of {step}, got "
                             f"{tuple(x.shape[2:])}; letterbox the image first "
                             "(detector.data.letterbox)")
        return self.head(self.neck(self.backbone.forward_features(x)))

    def decode(self, raw: List[torch.Tensor]) -> torch.Tensor:
        """Raw outputs -> (B, N, 5+C): xyxy input pixels, objectness prob, class probs."""
        return self.head.decode(raw)

    @torch.no_grad()
    def fuse(self, deploy: bool = True) -> "Detector":
        """The deployed network, in place; switches to eval mode. Outputs are unchanged (to
        float error).

        Folds every BatchNorm that directly follows a conv into the conv; with ``deploy``
        (default) also re-parameterises backbone and neck into the forms ONNX Runtime keeps in
        its blocked layout (:mod:`detector.models.deploy`: CSP split folded into the convs
        that produce each part, even-size pooling, aligned widths). The training graph and
        checkpoints are untouched by this: fuse a copy, never the model being trained.
        """
        from .deploy import fold_batchnorm, reparameterize

        self.eval()
        fold_batchnorm(self)
        if deploy and not getattr(self, "deployed", False):
            reparameterize(self)
            self.deployed = True
        return self


def parse_model_config(model_cfg) -> ModelConfig:
    """Validate a ``model`` section (unknown keys refused) into :class:`ModelConfig`."""
    cfg = from_dict(ModelConfig, model_cfg, "model")
    if cfg.backbone is None:
        raise ConfigError("model.backbone is required (inline options or a backbone YAML path)")
    if cfg.neck is None:
        raise ConfigError("model.neck is required (a mapping with type: efm | gfm | panet)")
    cfg.backbone = resolve_backbone_config(cfg.backbone)
    cfg.neck = parse_neck_config(cfg.neck)
    return cfg


def build_detector(model_cfg) -> Detector:
    """Build a :class:`Detector` from a config's ``model`` section (dict)."""
    from .backbones import build_backbone

    cfg = parse_model_config(model_cfg)
    backbone = build_backbone(dict(cfg.backbone), num_classes=0)
    strides = list(cfg.head.strides)
    neck = build_neck(cfg.neck, backbone.feature_channels, backbone.feature_strides, strides)
    head = YOLOHead(cfg.head, neck.out_channels, cfg.num_classes)
    plain = to_dict(cfg)
    plain["backbone"]["num_classes"] = 0
    detector = Detector(backbone, neck, head, config=plain, loss_cfg=cfg.loss,
                    backbone_weights=cfg.backbone_weights)
    detector.name = f"{cfg.backbone.get('name', 'backbone')}-{cfg.neck.type}"
    return detector
