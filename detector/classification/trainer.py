"""Classification training: :class:`ClsTrainer`, the engine (:class:`~detector.engine.base_trainer.
BaseTrainer`) with an ImageFolder's data, a classifier, cross-entropy and top-1 / top-5.

``ClsTrainer(cfg, data=...).train()`` trains a backbone config's classifier on an ImageFolder
tree in ``runs/<name>/``. The loop, optimizer step (AMP, clipping, non-finite steps skipped),
EMA, DDP under torchrun, atomic checkpoints, signals and the run logger (results.csv /
results.png / TensorBoard) are the engine's, shared with detection; each batch is one
optimizer step.

Exact resume: the data order and every crop / flip are functions of ``(seed, epoch, rank,
position)`` (:class:`detector.data.sampler.ResumableSampler` hands each sample its seed), the
mixup / cutmix draw of batch ``i`` runs under a seed of ``(seed, epoch, rank, i)``, and
``last.pt`` holds model, EMA, optimizer, lr step, scaler and RNG state. A run stopped mid-epoch
(SIGTERM / SIGINT, or SIGKILL after a ``checkpoint_interval`` save) and resumed starts at the
next batch, loads nothing it already trained on, and ends with the weights of an uninterrupted
run, with any number of workers.

Checkpoints: ``model`` / ``ema`` state dicts, ``config`` = ``{"model": <the backbone config,
num_classes = the data's classes>, "data": ..., "train": ...}``, ``names``, ``epoch``, ``batch``,
``metrics``, ``task: classify``; ``last.pt`` adds the training state.
``detector.build_model(ckpt["config"])`` rebuilds the classifier, and a detector config can name
the file as ``backbone_weights``.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, PathOrDict, load_config, to_dict
from ..engine import distributed as dist_utils
from ..engine.base_trainer import BaseTrainer, NonFiniteLossError, StopRequested
from .config import ClsRunConfig, parse_cls_config

LOGGER = logging.getLogger("cspdet.train")

CSV_COLUMNS = ["epoch", "train/loss", "lr", "val/loss", "top1", "top5", "bad_steps",
               "epoch_time_s", "images_per_s"]
PLOTTED = ["train/loss", "val/loss", "top1", "top5", "lr", "images_per_s"]


def batch_seed(seed: int, epoch: int, rank: int, batch: int) -> int:
    """Seed of batch-level randomness (mixup / cutmix) of one batch."""
    return int(np.random.default_rng([seed, epoch, rank, batch, 0x313C]).integers(2 ** 62))


class ClsTrainer(BaseTrainer):
    """Trains a classifier from a classification or backbone config.

    cfg: a :class:`ClsRunConfig`, a YAML path or a dict; ``overrides`` (``train.lr=0.1``) and
    ``data`` (an ImageFolder folder or ``"synthetic"``) apply on top. ``resume``: a ``last.pt``;
    the run continues in its folder with its stored config (``overrides`` still apply).
    ``model``: a classifier built in Python (its backbone config replaces the config's model).
    """
    LOSS_KEYS = ("loss",)
    FITNESS_KEY = "top1"
    CSV_COLUMNS = CSV_COLUMNS
    PLOTTED = PLOTTED

    def __init__(self, cfg: Optional[PathOrDict | ClsRunConfig] = None, overrides=(),
                 data: Optional[str] = None, resume: Optional[str] = None, progress: bool = True,
                 model: Optional[nn.Module] = None):
        if model is not None:  # e.g. CSPNet(stage_defs=[(1, 64, ResNetBasicBlock, False), ...])
            cfg = {**(load_config(cfg) if cfg is not None else {}), "model": plain_model_config(model)}
        self.given_model = model
        self.data_override = data
        super().__init__(cfg, overrides, resume, progress)

    def parse_config(self, cfg, overrides) -> ClsRunConfig:
        return cfg if isinstance(cfg, ClsRunConfig) else parse_cls_config(cfg, overrides, self.data_override)

    @property
    def eval_interval(self) -> int:
        return self.cfg.train.eval_interval

    @property
    def resolved_config(self) -> dict:
        """The config as run, with the model's full backbone config."""
        return {**self.cfg.to_dict(), "model": self.model_config}

    # ------------------------------------------------------------------ set-up
    def setup_data(self) -> None:
        from .data import build_datasets, build_eval_loader, build_train_loader, resolve_root
        tc = self.cfg.train
        if self.main:  # synthetic data: generated once, before the other ranks look
            resolve_root(self.cfg.data)
        dist_utils.barrier()
        self.train_set, self.val_set = build_datasets(self.cfg.data, tc.img_size, tc.augment)
        self.names = self.train_set.names
        if len(self.train_set) < tc.batch_size * self.world:
            raise ConfigError(f"{len(self.train_set)} training images are fewer than one batch "
                              f"({tc.batch_size} x {self.world} processes); lower train.batch_size")
        self.train_loader = build_train_loader(self.train_set, tc.batch_size, tc.workers, tc.seed,
                                               self.rank, self.world)
        self.val_loader = build_eval_loader(self.val_set, tc.eval_batch_size or tc.batch_size,
                                            min(tc.workers, 2)) if self.main else None

    def build_model(self) -> nn.Module:
        """The given model (its classes checked against the data) or the config's; the loss."""
        from ..models.builder import build_model
        model, n = self.given_model, len(self.names)
        if model is None:
            model = build_model({"model": {**self.cfg.model, "num_classes": n}})
        elif getattr(model, "num_classes", None) != n:
            raise ConfigError(f"the model has {getattr(model, 'num_classes', None)} classes, the data "
                              f"{n}: build it with num_classes={n}")
        self.model_config = plain_model_config(model)
        tc = self.cfg.train
        self.criterion = nn.CrossEntropyLoss(label_smoothing=tc.label_smoothing)
        self.mix = _build_mix(tc.augment, n)
        return model

    def log_run_summary(self) -> None:
        tc = self.cfg.train
        LOGGER.info("run folder %s | %s (%d threads) | %s | %d train / %d val images, %d classes "
                    "| batch %d x %d process(es) | %d steps (%d warm-up)", self.run_dir,
                    self.device, torch.get_num_threads(), self.model_config.get("name") or "cspnet",
                    len(self.train_set), len(self.val_set), len(self.names), tc.batch_size,
                    self.world, self.total_steps, self.warmup_steps)

    def checkpoint_extras(self, full: bool) -> dict:
        return {"task": "classify"}

    # ------------------------------------------------------------------ step
    def preprocess(self, i: int, batch):
        """Images in [0, 1] and labels on the device; batch ``i`` mixed (mixup / cutmix) under a
        seed of ``(seed, epoch, rank, i)``, so a resumed run mixes it the same way."""
        images, labels = batch
        tc = self.cfg.train
        x = images.to(self.device, non_blocking=True).float() / 255.0
        y = labels.to(self.device)
        if self.mix is not None:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(batch_seed(tc.seed, self.epoch, self.rank, i))
                if torch.rand(()) < tc.augment.mix_prob:
                    x, y = self.mix(x, y)
        return x, y

    def compute_loss(self, outputs, targets):
        loss = self.criterion(outputs.float(), targets)
        return loss, {"loss": loss.detach()}

    def mid_epoch_save_due(self, i: int) -> bool:
        """``last.pt`` every ``checkpoint_interval`` batches of the epoch (a batch is a step)."""
        interval = self.cfg.train.checkpoint_interval
        return bool(interval) and (i + 1) % interval == 0 and i + 1 < self.batches_per_epoch

    def resume_after_layout_change(self, ckpt: dict):
        """Another number of processes: the interrupted epoch restarts at its beginning."""
        LOGGER.warning("resuming with %d processes instead of %d: the interrupted epoch "
                       "restarts at its beginning", self.world, ckpt.get("world_size", 1))
        return self.start_epoch, 0

    # ------------------------------------------------------------------ evaluation
    def evaluate_model(self, net) -> Dict[str, float]:
        """top-1 / top-5 / loss of ``net`` on the val split."""
        from .evaluate import evaluate_classifier
        r = evaluate_classifier(net, self.val_loader, len(self.names), self.device,
                                progress=self.progress)
        LOGGER.info("eval: top-1 %.2f%% | top-5 %.2f%% | loss %.4f (%d images)", r["top1"],
                    r["top5"], r["loss"], r["images"])
        return {"top1": r["top1"], "top5": r["top5"], "val/loss": r["loss"]}


def plain_model_config(model: nn.Module) -> dict:
    """The backbone config of ``model`` with names for layer and block classes, so that the
    checkpoint is plain data and ``build_model`` rebuilds it. A class with no config name (a user's
    own block) cannot be stored: ConfigError naming it."""
    from ..models.blocks import BLOCKS
    from ..models.layers import ACTIVATIONS, NORMS
    names = {}
    for table in (BLOCKS, NORMS, ACTIVATIONS):
        for name, cls in table.items():
            names.setdefault(cls, name)

    def plain(value, where):
        if isinstance(value, dict):
            return {k: plain(v, f"{where}.{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        if value in names:
            return names[value]
        raise ConfigError(f"{where} is {value!r}, which has no config name, so a checkpoint "
                          "cannot record how to rebuild the model; use a block / layer name "
                          f"({', '.join(BLOCKS)}) or add the class to the block table")

    config = getattr(model, "config", None)
    if config is None:
        raise ConfigError(f"{type(model).__name__} has no backbone config (.config); train-cls "
                          "trains cspdet backbones (detector.build_model / CSPNet)")
    return plain(to_dict(config), "model")


def _build_mix(aug, num_classes: int):
    """torchvision's MixUp / CutMix (one of them per batch when both are on), or None."""
    from torchvision.transforms import v2
    ops = []
    if aug.mixup > 0:
        ops.append(v2.MixUp(alpha=aug.mixup, num_classes=num_classes))
    if aug.cutmix > 0:
        ops.append(v2.CutMix(alpha=aug.cutmix, num_classes=num_classes))
    if not ops or aug.mix_prob <= 0:
        return None
    return ops[0] if len(ops) == 1 else v2.RandomChoice(ops)


__all__ = ["ClsTrainer", "StopRequested", "NonFiniteLossError", "batch_seed", "plain_model_config"]
