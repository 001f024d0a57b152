"""The classification training config: sections ``model``, ``data`` and ``train``.

``model`` is a backbone config's model section (``configs/backbones/*.yaml``, or
``{arch: cspresnet10}``; its ``num_classes`` is set from the data). ``data`` names an ImageFolder
tree (``root`` with ``train/<class>/`` and ``val/<class>/``) or asks for the synthetic quick-start
data. ``train`` is :class:`ClsTrainConfig`. Every section goes through
:func:`detector.config.from_dict`, so ``train.lr0=0.1`` is an error naming ``lr``.

The optimizer, schedule and run fields are :class:`detector.engine.base_config.BaseTrainConfig`'s,
shared with the detection ``train`` section, so both trainers share :mod:`detector.engine.optim`
and :class:`detector.engine.base_trainer.BaseTrainer`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

from ..config import ConfigError, PathOrDict, check_keys, from_dict, load_config, load_yaml, to_dict
from ..engine.base_config import BaseTrainConfig
from .synthetic import SyntheticConfig

TOP_LEVEL_KEYS = ("model", "data", "train")


@dataclass
class ClsDataConfig:
    """``data`` section.

    root: the ImageFolder root; ``train`` / ``val``: its split folders (one sub-folder per
        class, the same class folders in both).
    synthetic: generate the quick-start data (:class:`SyntheticConfig`) into the cache and use
        it instead of ``root`` (``--data synthetic`` on the command line).
    crop_pct: evaluation resizes the short side to ``img_size / crop_pct``, then centre-crops
        ``img_size`` (0.875 is the usual ImageNet setting; 1.0 = resize only).
    """
    root: str = ""
    train: str = "train"
    val: str = "val"
    synthetic: Optional[SyntheticConfig] = None
    crop_pct: float = 0.875

    def __post_init__(self):
        if isinstance(self.synthetic, Mapping):
            self.synthetic = from_dict(SyntheticConfig, self.synthetic, "data.synthetic")
        if not self.root and self.synthetic is None:
            raise ConfigError("data needs a 'root' (an ImageFolder folder with train/<class>/ and "
                              "val/<class>/; --data FOLDER) or 'synthetic' (--data synthetic)")
        if not 0 < self.crop_pct <= 1:
            raise ConfigError(f"data.crop_pct must be in (0, 1], got {self.crop_pct}")


@dataclass
class ClsAugmentConfig:
    """``train.augment``: what a training image goes through.

    scale, ratio: RandomResizedCrop's area fraction and aspect range; hflip: flip probability;
    color_jitter: brightness / contrast / saturation strength (0 = off).
    mixup, cutmix: Beta(alpha, alpha) of torchvision's MixUp / CutMix (0 = off); with both on,
    each batch gets one of them at random. mix_prob: the share of batches that are mixed.
    """
    scale: Tuple[float, float] = (0.35, 1.0)
    ratio: Tuple[float, float] = (0.75, 1.333)
    hflip: float = 0.5
    color_jitter: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    mix_prob: float = 1.0

    def __post_init__(self):
        self.scale = tuple(float(v) for v in self.scale)
        self.ratio = tuple(float(v) for v in self.ratio)
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1] <= 1:
            raise ConfigError(f"train.augment.scale must be [lo, hi] in (0, 1], got {list(self.scale)}")
        if len(self.ratio) != 2 or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"train.augment.ratio must be [lo, hi] with 0 < lo <= hi, got {list(self.ratio)}")
        for key in ("hflip", "mix_prob"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"train.augment.{key} must be in [0, 1], got {getattr(self, key)}")
        for key in ("color_jitter", "mixup", "cutmix"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.augment.{key} must be >= 0, got {getattr(self, key)}")


@dataclass
class ClsTrainConfig(BaseTrainConfig):
    """``train`` section of classification training: the shared fields
    (:class:`~detector.engine.base_config.BaseTrainConfig`) with classification defaults, and
    classification's own.

    Optimizer, warm-up, schedule, EMA, AMP, seed, workers, threads, device, checkpoint_interval,
    save_dir / name / exist_ok, tensorboard and plots mean what they mean in the detection
    ``train`` section (docs/training.md). Defaults: an ImageNet-style recipe (224 px, SGD);
    configs/classify/ holds the quick-start settings.

    label_smoothing: of the cross-entropy targets (also of mixed targets).
    eval_interval: evaluate every N epochs (and always after the last one).
    eval_batch_size: 0 = ``batch_size``.
    """
    name: str = "cls"
    epochs: int = 90
    batch_size: int = 64
    img_size: int = 224
    optimizer: str = "sgd"
    lr: float = 0.025
    weight_decay: float = 1e-4
    warmup_min_iters: int = 0
    min_lr_ratio: float = 0.01
    ema_decay: float = 0.9998
    grad_clip: float = 0.0
    label_smoothing: float = 0.1
    augment: ClsAugmentConfig = field(default_factory=ClsAugmentConfig)
    eval_interval: int = 1
    eval_batch_size: int = 0

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"train.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.workers < 0:
            raise ConfigError(f"train.workers must be >= 0, got {self.workers}")
        if isinstance(self.augment, Mapping):
            self.augment = from_dict(ClsAugmentConfig, self.augment, "train.augment")
        elif self.augment is None:
            self.augment = ClsAugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)

    def check_img_size(self) -> None:
        if self.img_size < 16:
            raise ConfigError(f"train.img_size must be >= 16, got {self.img_size}")


@dataclass
class ClsRunConfig:
    """A validated classification config; ``model`` stays a plain dict (the builder checks it)."""
    model: dict
    data: ClsDataConfig
    train: ClsTrainConfig
    source: str = ""

    def to_dict(self) -> dict:
        return {"model": to_dict(self.model), "data": to_dict(self.data), "train": to_dict(self.train)}


def parse_cls_config(cfg: PathOrDict, overrides=(), data: Optional[str] = None) -> ClsRunConfig:
    """A classification config or a plain backbone config (path or dict), ``a.b=value``
    overrides and the ``--data`` argument (a folder, or ``synthetic``) -> :class:`ClsRunConfig`."""
    raw = load_config(cfg)
    model = raw.get("model")
    if isinstance(model, Mapping) and ("neck" in model or "head" in model):
        raise ConfigError(f"{raw.get('_source') or 'the config'} is a detector config; train-cls "
                          "trains a backbone config (configs/backbones/*.yaml)")
    for section in ("data", "train"):
        if raw.get(section) is None:
            raw[section] = {}
    if isinstance(raw["train"], Mapping) and "augment" not in raw["train"]:
        raw["train"]["augment"] = {}  # so train.augment.mixup=0.2 works on any config
    if data is not None:
        if not isinstance(raw["data"], Mapping):
            raise ConfigError("'data' must be a mapping in a classification config")
        if str(data) == "synthetic":
            raw["data"] = {**raw["data"], "root": "", "synthetic": raw["data"].get("synthetic") or {}}
        else:
            raw["data"] = {**raw["data"], "root": str(data), "synthetic": None}
    raw = load_config(raw, overrides)
    source = str(raw.pop("_source", "") or "")
    check_keys(raw, TOP_LEVEL_KEYS, "")
    model = raw.get("model")
    if isinstance(model, str):  # model: configs/backbones/cspresnet10.yaml
        model = load_yaml(model).get("model")
    if not isinstance(model, Mapping):
        raise ConfigError(f"classification config {source or '(dict)'} needs a 'model' section "
                          "(a backbone config such as configs/backbones/cspresnet10.yaml)")
    return ClsRunConfig(model=copy.deepcopy(dict(model)),
                        data=from_dict(ClsDataConfig, raw["data"], "data"),
                        train=from_dict(ClsTrainConfig, raw["train"], "train"), source=source)

