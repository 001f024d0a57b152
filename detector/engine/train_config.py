"""The training config: the ``train`` and ``eval`` sections and the top-level layout.

A training config has exactly the sections ``model``, ``data``, ``train``, ``eval`` and an
optional ``weights`` (a detector checkpoint to fine-tune from). Every section is read with
:func:`detector.config.from_dict`, so ``train.lr0=0.1`` fails at once with
``unknown config key 'train.lr0' (did you mean 'lr'?)`` instead of training with a default.

Defaults are the quick-start recipe (the flagship on the synthetic shapes data at 320 on a
few CPU cores, see docs/training.md); the paper's schedule is a set of overrides.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Tuple

from ..config import ConfigError, PathOrDict, check_keys, from_dict, load_config, to_dict
from ..data.config import AugmentConfig

TOP_LEVEL_KEYS = ("model", "data", "train", "eval", "weights")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("cosine", "step")
AMP_MODES = ("bf16", "fp16", "off")


@dataclass
class TrainConfig:
    """``train`` section.

    name: run folder ``<save_dir>/<name>`` (``name2``, ``name3`` ... when it exists and
        ``exist_ok`` is false).
    batch_size: images per step per process; nominal_batch_size: images per optimizer step
        (gradients are accumulated over ``nominal_batch_size / (batch_size * world_size)``
        steps; 0 = no accumulation). The loss is a per-image mean, so lr does not depend on it.
    multi_scale: ``[lo, hi]`` factors of ``img_size``; each batch is resized to a random
        multiple of the model's largest stride in that range (null = off).
    lr, momentum, nesterov, weight_decay: the optimizer (``sgd`` or ``adamw``; AdamW uses
        ``momentum`` as beta1). No weight decay on norm layers and biases.
    warmup_epochs: linear warm-up of lr (and of SGD momentum from ``warmup_momentum``; biases
        start at ``warmup_bias_lr``), at least ``warmup_min_iters`` iterations.
    scheduler: ``cosine`` (to ``lr * min_lr_ratio``) or ``step`` (x ``gamma`` at each fraction
        of the run in ``milestones``; the paper's darknet schedule is 400k and 450k of 500k
        iterations = ``[0.8, 0.9]``).
    ema, ema_decay, ema_tau: exponential moving average of the weights, used for evaluation
        and ``best.pt``; its decay ramps up as ``decay * (1 - exp(-updates / tau))``.
    amp: ``bf16`` | ``fp16`` | ``off`` mixed precision on CUDA. cpu_amp: also autocast to bf16
        on CPU when ``amp: bf16`` (off by default: CPUs without native bf16 run it slower than
        float32; otherwise ``amp`` is ignored on CPU, with a note).
    grad_clip: max gradient norm (0 = off). close_mosaic: epochs at the end without mosaic.
    seed: seeds python, numpy and torch (per rank) and the data order.
    deterministic: ``torch.use_deterministic_algorithms`` (slower on GPU).
    workers: data-loading processes per rank. threads: torch CPU threads per rank (0 = the cores
        divided by the number of processes); tools/train.py sets ``OMP_WAIT_POLICY=PASSIVE``,
        without which threads spinning on cores shared with other work were 20x slower. device: ``cpu``, ``cuda``, ``cuda:1``; empty =
        CUDA when available.
    augment: :class:`AugmentConfig`; null = no augmentation (letterbox only).
    max_bad_steps: consecutive non-finite losses before the run stops.
    checkpoint_interval: also write ``last.pt`` every N optimizer steps inside an epoch
        (0 = at epoch ends only); SIGTERM / SIGINT always write it before stopping.
    """
    name: str = "exp"
    epochs: int = 30
    batch_size: int = 8
    nominal_batch_size: int = 0
    img_size: int = 320
    multi_scale: Optional[Tuple[float, float]] = None
    optimizer: str = "adamw"
    lr: float = 0.002
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    warmup_min_iters: int = 30
    warmup_momentum: float = 0.8
    warmup_bias_lr: float = 0.0
    scheduler: str = "cosine"
    min_lr_ratio: float = 0.05
    milestones: Tuple[float, ...] = (0.8, 0.9)
    gamma: float = 0.1
    ema: bool = True
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0
    amp: str = "bf16"
    cpu_amp: bool = False
    grad_clip: float = 10.0
    close_mosaic: int = 1
    seed: int = 0
    deterministic: bool = False
    workers: int = 2
    threads: int = 0
    device: str = ""
    augment: Optional[AugmentConfig] = field(default_factory=AugmentConfig)
    cache: bool = False
    max_bad_steps: int = 5
    checkpoint_interval: int = 0
    save_dir: str = "runs"
    exist_ok: bool = False
    tensorboard: bool = True
    plots: bool = True

    def __post_init__(self):
        _choice(self.optimizer, OPTIMIZERS, "train.optimizer")
        _choice(self.scheduler, SCHEDULERS, "train.scheduler")
        self.amp = "off" if self.amp in (False, None) else str(self.amp)
        _choice(self.amp, AMP_MODES, "train.amp")
        for key in ("epochs", "batch_size", "img_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        if self.img_size % 32:
            raise ConfigError(f"train.img_size must be a multiple of 32, got {self.img_size}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.multi_scale is not None:
            ms = tuple(float(v) for v in self.multi_scale)
            if len(ms) != 2 or not 0 < ms[0] <= ms[1]:
                raise ConfigError(f"train.multi_scale must be [lo, hi] with 0 < lo <= hi "
                                  f"(factors of img_size) or null, got {self.multi_scale}")
            self.multi_scale = ms
        self.milestones = tuple(float(m) for m in self.milestones)
        if any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ConfigError("train.milestones are increasing fractions of the run in (0, 1), "
                              f"e.g. [0.8, 0.9]; got {list(self.milestones)}")
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.max_bad_steps < 1:
            raise ConfigError(f"train.max_bad_steps must be >= 1, got {self.max_bad_steps}")
        if isinstance(self.augment, Mapping):
            self.augment = from_dict(AugmentConfig, self.augment, "train.augment")


@dataclass
class EvalConfig:
    """``eval`` section: COCO evaluation of the EMA model on the val split.

    interval: every N epochs (and always after the last; 0 = only after the last).
    batch_size: 0 = the training batch size.
    """
    img_size: int = 320
    conf_thres: float = 0.001
    iou_thres: float = 0.6
    max_det: int = 300
    interval: int = 1
    batch_size: int = 0

    def __post_init__(self):
        if self.img_size % 32:
            raise ConfigError(f"eval.img_size must be a multiple of 32, got {self.img_size}")


@dataclass
class RunConfig:
    """A validated training config. ``model`` stays a plain dict (the model builder validates
    it); ``data`` is a path or a mapping (the data module validates it)."""
    model: dict
    data: Any
    train: TrainConfig
    eval: EvalConfig
    weights: Optional[str] = None
    source: str = ""

    def to_dict(self) -> dict:
        """Plain YAML-safe dict (what is saved in the run folder and in checkpoints)."""
        return {"model": to_dict(self.model), "data": to_dict(self.data),
                "train": to_dict(self.train), "eval": to_dict(self.eval),
                "weights": self.weights}


def parse_run_config(cfg: PathOrDict, overrides=()) -> RunConfig:
    """YAML path or dict (+ ``a.b=value`` overrides) -> :class:`RunConfig`; fails fast on typos."""
    raw = load_config(cfg)
    # sections with defaults exist before the overrides, so train.augment.mosaic=0 works
    # on a YAML that never mentions augment
    for section in ("train", "eval"):
        if raw.get(section) is None:
            raw[section] = {}
    if isinstance(raw["train"], Mapping) and "augment" not in raw["train"]:
        raw["train"]["augment"] = to_dict(AugmentConfig())
    raw = load_config(raw, overrides)
    source = str(raw.pop("_source", "") or "")
    check_keys(raw, TOP_LEVEL_KEYS, "")
    if not isinstance(raw.get("model"), Mapping):
        raise ConfigError(f"training config {source or '(dict)'} needs a 'model' section")
    if raw.get("data") is None:
        raise ConfigError(f"training config {source or '(dict)'} needs a 'data' section "
                          "(a data YAML path such as configs/data/shapes.yaml, or a mapping)")
    train = from_dict(TrainConfig, raw.get("train"), "train")
    ev = from_dict(EvalConfig, raw.get("eval"), "eval")
    weights = raw.get("weights")
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ConfigError(f"'weights' must be a checkpoint path or null, got {weights!r}")
    data = raw["data"]
    if isinstance(data, Mapping):
        data = copy.deepcopy(dict(data))
        if source and "_source" not in data:
            data["_source"] = source  # relative paths in an inline data section: the YAML's folder
    return RunConfig(model=copy.deepcopy(dict(raw["model"])), data=data, train=train, eval=ev,
                     weights=str(weights) if weights else None, source=source)


def _choice(value, choices, where):
    if value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(choices)}; got '{value}'")
