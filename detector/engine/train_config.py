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
from typing import Any, Mapping, Optional, Tuple, Union

from ..config import ConfigError, PathOrDict, check_keys, from_dict, load_config, to_dict
from ..data.config import AugmentConfig
from .base_config import BaseTrainConfig

TOP_LEVEL_KEYS = ("model", "data", "train", "eval", "weights")


@dataclass
class TrainConfig(BaseTrainConfig):
    """``train`` section: the shared fields (:class:`BaseTrainConfig`) and detection's own.

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
    compile: ``torch.compile`` the training forward and backward (faster steps after a one-off
        compile of minutes per batch shape; needs a C++ compiler on a CPU).
    amp: ``bf16`` | ``fp16`` | ``off`` mixed precision on CUDA. cpu_amp: also autocast to bf16
        on CPU when ``amp: bf16``: true, false (default: CPUs without native bf16 run it slower
        than float32) or ``auto`` (only where the CPU has AMX or AVX-512 BF16); otherwise
        ``amp`` is ignored on CPU, with a note.
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
    nominal_batch_size: int = 0
    multi_scale: Optional[Tuple[float, float]] = None
    cpu_amp: Union[bool, str] = False
    close_mosaic: int = 1
    augment: Optional[AugmentConfig] = field(default_factory=AugmentConfig)
    cache: bool = False

    def __post_init__(self):
        super().__post_init__()
        if self.cpu_amp not in (True, False, "auto"):
            raise ConfigError(f"train.cpu_amp is true, false or auto (bf16 where the CPU has "
                              f"native bf16: AMX or AVX-512 BF16), got {self.cpu_amp!r}")
        if self.multi_scale is not None:
            ms = tuple(float(v) for v in self.multi_scale)
            if len(ms) != 2 or not 0 < ms[0] <= ms[1]:
                raise ConfigError(f"train.multi_scale must be [lo, hi] with 0 < lo <= hi "
                                  f"(factors of img_size) or null, got {self.multi_scale}")
            self.multi_scale = ms
            if self.compile:
                raise ConfigError("train.compile compiles the model once per input size, and "
                                  "train.multi_scale gives a new size every few batches: set "
                                  "train.multi_scale=null or train.compile=false")
        if isinstance(self.augment, Mapping):
            self.augment = from_dict(AugmentConfig, self.augment, "train.augment")

    def check_img_size(self) -> None:
        super().check_img_size()
        if self.img_size % 32:
            raise ConfigError(f"train.img_size must be a multiple of 32, got {self.img_size}")


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

