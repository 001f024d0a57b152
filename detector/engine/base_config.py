"""The ``train`` fields every task shares: :class:`BaseTrainConfig`.

Detection (:class:`detector.engine.train_config.TrainConfig`) and classification
(:class:`detector.classification.config.ClsTrainConfig`) extend it with their own fields and
defaults, so the optimizer, schedule, EMA, AMP, run-folder and checkpoint fields have one
meaning, one validation and one set of allowed values (the engine's optimizer, schedule and
trainer read only these).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Tuple

from ..config import ConfigError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("cosine", "step")
AMP_MODES = ("bf16", "fp16", "off")


@dataclass
class BaseTrainConfig:
    """Shared ``train`` fields (their meaning: docs/training.md). A subclass re-declares a field
    to change its default; dataclass inheritance keeps the field where the base put it."""
    name: str = "exp"
    epochs: int = 30
    batch_size: int = 8
    img_size: int = 320
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
    compile: bool = False
    grad_clip: float = 10.0
    seed: int = 0
    deterministic: bool = False
    workers: int = 2
    threads: int = 0
    device: str = ""
    max_bad_steps: int = 5
    checkpoint_interval: int = 0
    save_dir: str = "runs"
    exist_ok: bool = False
    tensorboard: bool = True
    plots: bool = True
    #: bf16 autocast on CPU too; a task whose config has no ``cpu_amp`` key trains float32 there
    cpu_amp: ClassVar[bool] = False

    def __post_init__(self):
        check_choice(self.optimizer, OPTIMIZERS, "train.optimizer")
        check_choice(self.scheduler, SCHEDULERS, "train.scheduler")
        self.amp = "off" if self.amp in (False, None) else str(self.amp)
        check_choice(self.amp, AMP_MODES, "train.amp")
        for key in ("epochs", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        self.check_img_size()
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        self.milestones = tuple(float(m) for m in self.milestones)
        if any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ConfigError("train.milestones are increasing fractions of the run in (0, 1), "
                              f"e.g. [0.8, 0.9]; got {list(self.milestones)}")
        if not 0 < self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must be in (0, 1), got {self.ema_decay}")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"train.compile is true or false, got {self.compile!r}")
        if self.max_bad_steps < 1:
            raise ConfigError(f"train.max_bad_steps must be >= 1, got {self.max_bad_steps}")

    def check_img_size(self) -> None:
        """The task's rule for ``img_size`` (a detector needs multiples of its stride)."""
        if self.img_size < 1:
            raise ConfigError(f"train.img_size must be >= 1, got {self.img_size}")


def check_choice(value, choices, where: str) -> None:
    """ConfigError naming ``where`` and the allowed values when ``value`` is not one of them."""
    if value not in choices:
        raise ConfigError(f"{where} must be one of {', '.join(choices)}; got '{value}'")
