"""Classification training (YOLOX-style small steps): :class:`ClsTrainer`.

``ClsTrainer(cfg, data=...).train()`` trains a backbone config's classifier on an ImageFolder
tree in ``runs/<name>/`` with the detection engine's parts: optimizer groups and warm-up +
cosine schedule (:mod:`detector.engine.optim`), EMA (:mod:`detector.engine.ema`), DDP under
torchrun (:mod:`detector.engine.distributed`), AMP on CUDA, atomic checkpoints and the run
logger (results.csv / results.png / TensorBoard).

Exact resume: the data order and every crop / flip are functions of ``(seed, epoch, rank,
position)`` (:class:`detector.data.sampler.ResumableSampler` hands each sample its seed), the
mixup / cutmix draw of batch ``i`` runs under a seed of ``(seed, epoch, rank, i)``, and
``last.pt`` holds model, EMA, optimizer, lr step, scaler and RNG state. A run stopped mid-epoch
(SIGTERM / SIGINT, or SIGKILL after a ``checkpoint_interval`` save) and resumed starts at the
next batch, loads nothing it already trained on, and ends with the weights of an uninterrupted
run, with any number of workers.

Checkpoints: ``model`` / ``ema`` state dicts, ``config`` = ``{"model": <the backbone config,
num_classes = the data's classes>, "data": ..., "train": ...}``, ``names``, ``epoch``, ``batch``,
``metrics``; ``last.pt`` adds the training state. ``detector.build_model(ckpt["config"])``
rebuilds the classifier, and a detector config can name the file as ``backbone_weights``.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, PathOrDict, load_config, save_config, to_dict
from ..engine import distributed as dist_utils
from ..engine.checkpoint import CheckpointError, load_checkpoint, load_state_strict, save_checkpoint
from ..engine.ema import ModelEMA, unwrap
from ..engine.logger import RunLogger, log_to_file, remove_log_file
from ..engine.optim import WarmupScheduler, build_optimizer
from ..engine.runtime import agree_run_dir, rng_state, set_rng_state, setup_process
from .config import ClsRunConfig, parse_cls_config

LOGGER = logging.getLogger("cspdet.train")

CSV_COLUMNS = ["epoch", "train/loss", "lr", "val/loss", "top1", "top5", "bad_steps",
               "epoch_time_s", "images_per_s"]
PLOTTED = ["train/loss", "val/loss", "top1", "top5", "lr", "images_per_s"]


class StopRequested(Exception):
    """SIGTERM / SIGINT: ``last.pt`` was written after the current step; resume from it."""


class NonFiniteLossError(RuntimeError):
    """Too many optimizer steps in a row with a non-finite loss or gradient."""


def batch_seed(seed: int, epoch: int, rank: int, batch: int) -> int:
    """Seed of batch-level randomness (mixup / cutmix) of one batch."""
    return int(np.random.default_rng([seed, epoch, rank, batch, 0x313C]).integers(2 ** 62))


class ClsTrainer:
    """Trains a classifier from a classification or backbone config.

    cfg: a :class:`ClsRunConfig`, a YAML path or a dict; ``overrides`` (``train.lr=0.1``) and
    ``data`` (an ImageFolder folder or ``"synthetic"``) apply on top. ``resume``: a ``last.pt``;
    the run continues in its folder with its stored config (``overrides`` still apply).
    """

    def __init__(self, cfg: Optional[PathOrDict | ClsRunConfig] = None, overrides=(),
                 data: Optional[str] = None, resume: Optional[str] = None, progress: bool = True,
                 model: Optional[nn.Module] = None):
        self.resume_ckpt = None
        if model is not None:  # e.g. CSPNet(stage_defs=[(1, 64, ResNetBasicBlock, False), ...])
            cfg = {**(load_config(cfg) if cfg is not None else {}), "model": plain_model_config(model)}
            self.given_model = model
        else:
            self.given_model = None
        self.run_dir_hint = None
        if resume:
            self.resume_ckpt = load_checkpoint(resume)
            if "optimizer" not in self.resume_ckpt:
                raise CheckpointError(f"{resume} holds no training state; resume needs a last.pt")
            cfg = self.resume_ckpt["config"]
            self.run_dir_hint = Path(resume).resolve().parent
        if cfg is None:
            raise ConfigError("give a config (--cfg) or a checkpoint to resume (--resume)")
        self.cfg = cfg if isinstance(cfg, ClsRunConfig) else parse_cls_config(cfg, overrides, data)
        self.progress = progress
        self.stop_signal = None
        self.logger = None

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        tc = self.cfg.train
        self.device, self.distributed, self.rank, self.world = setup_process(tc)
        self.main = self.rank == 0
        self.run_dir = agree_run_dir(tc.save_dir, tc.name, tc.exist_ok, self.run_dir_hint)

        from .data import build_datasets, build_eval_loader, build_train_loader, resolve_root
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

        from ..models.builder import build_model
        model_cfg = dict(self.cfg.model)
        model_cfg["num_classes"] = len(self.names)
        model = self.given_model
        if model is None:
            model = build_model({"model": model_cfg})
        elif getattr(model, "num_classes", None) != len(self.names):
            raise ConfigError(f"the model has {getattr(model, 'num_classes', None)} classes, the data "
                              f"{len(self.names)}: build it with num_classes={len(self.names)}")
        self.model_config = plain_model_config(model)
        model.to(self.device)
        if self.distributed and self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.ddp_model = model
        if self.distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        self.batches_per_epoch = len(self.train_loader)
        total_steps = self.batches_per_epoch * tc.epochs
        warmup = 0
        if tc.warmup_epochs > 0:
            warmup = max(round(tc.warmup_epochs * self.batches_per_epoch), tc.warmup_min_iters)
            warmup = min(warmup, total_steps // 2)
        self.optimizer = build_optimizer(model, tc)
        self.scheduler = WarmupScheduler(self.optimizer, tc, total_steps, warmup)
        self.ema = ModelEMA(model, tc.ema_decay, tc.ema_tau) if tc.ema else None
        self.criterion = nn.CrossEntropyLoss(label_smoothing=tc.label_smoothing)
        self.mix = _build_mix(tc.augment, len(self.names))
        self.amp_dtype = None
        if tc.amp != "off" and self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if tc.amp == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        self.start_epoch, self.start_batch = 0, 0
        self.best_fitness, self.bad_steps_total = -1.0, 0
        self.last_metrics: Dict[str, float] = {}
        if self.resume_ckpt is not None:
            self._restore(self.resume_ckpt)
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._log_handler = log_to_file(self.run_dir / "train.log")
            self.logger = RunLogger(self.run_dir, tensorboard=tc.tensorboard, plots=tc.plots,
                                    columns=CSV_COLUMNS, plotted=PLOTTED)
            self.logger.keep_epochs_before(self.start_epoch + (1 if self.start_batch else 0))
            self.resolved_config = {**self.cfg.to_dict(), "model": self.model_config}
            save_config(self.resolved_config, self.run_dir / "config.yaml")
            LOGGER.info("run folder %s | %s (%d threads) | %s | %d train / %d val images, %d classes "
                        "| batch %d x %d process(es) | %d steps (%d warm-up)", self.run_dir,
                        self.device, torch.get_num_threads(), self.model_config.get("name") or "cspnet",
                        len(self.train_set), len(self.val_set), len(self.names), tc.batch_size,
                        self.world, total_steps, warmup)

    # ------------------------------------------------------------------ loop
    def train(self) -> Dict[str, Any]:
        """The whole schedule; returns ``run_dir`` and the last evaluation's metrics."""
        handlers = {}
        try:
            self._setup()
            handlers = self._install_signal_handlers()
            tc = self.cfg.train
            for epoch in range(self.start_epoch, tc.epochs):
                t0 = time.time()
                start = self.start_batch if epoch == self.start_epoch else 0
                loss, images, lr = self.train_one_epoch(epoch, start)
                epoch_time = time.time() - t0
                last = epoch + 1 == tc.epochs
                metrics = {}
                if last or (tc.eval_interval > 0 and (epoch + 1) % tc.eval_interval == 0):
                    metrics = self.evaluate()
                self._end_epoch(epoch, loss, lr, metrics, epoch_time, images)
            return {"run_dir": str(self.run_dir), "metrics": dict(self.last_metrics),
                    "best_fitness": self.best_fitness}
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
            if self.logger is not None:
                self.logger.close()
            remove_log_file(getattr(self, "_log_handler", None))
            dist_utils.cleanup()

    def train_one_epoch(self, epoch: int, start_batch: int = 0):
        tc = self.cfg.train
        self.model.train()
        self.train_loader.sampler.set_epoch(epoch, start_batch * tc.batch_size)
        nb = self.batches_per_epoch
        bar = None
        if self.main and self.progress:
            from tqdm import tqdm
            bar = tqdm(total=nb, initial=start_batch, desc=f"epoch {epoch + 1}/{tc.epochs}",
                       unit="batch", dynamic_ncols=True)
        loss_sum, n_seen, images_done, consecutive_bad = 0.0, 0, 0, 0
        t_start = time.time()
        for i, (images, labels) in enumerate(self.train_loader, start=start_batch):
            loss = self.train_step(images, labels, epoch, i)
            if loss is None:
                consecutive_bad += 1
                self.bad_steps_total += 1
                if self.main:
                    LOGGER.warning("epoch %d batch %d: non-finite loss or gradient, step skipped",
                                   epoch + 1, i + 1)
                if consecutive_bad >= tc.max_bad_steps:
                    raise NonFiniteLossError(
                        f"{consecutive_bad} steps in a row had a non-finite loss or gradient "
                        f"(epoch {epoch + 1}, batch {i + 1}); last good checkpoint: "
                        f"{self.run_dir / 'last.pt'}. Lower train.lr or set train.amp=off.")
            else:
                consecutive_bad = 0
                loss_sum += loss
                n_seen += 1
            images_done += len(images)
            if dist_utils.any_rank(self.stop_signal is not None, self.device):
                self.save_last(epoch, i + 1)
                if bar is not None:
                    bar.close()
                raise StopRequested(f"stopped by signal at epoch {epoch + 1}, batch {i + 1}; resume "
                                    f"with --resume {self.run_dir / 'last.pt'}")
            if tc.checkpoint_interval and (i + 1) % tc.checkpoint_interval == 0 and i + 1 < nb:
                self.save_last(epoch, i + 1)
            if bar is not None:
                rate = images_done * self.world / max(time.time() - t_start, 1e-9)
                bar.set_postfix(loss=f"{loss_sum / max(n_seen, 1):.4f}", img_s=f"{rate:.1f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
                bar.update(1)
        if bar is not None:
            bar.close()
        mean = dist_utils.all_reduce_mean(torch.tensor(loss_sum / max(n_seen, 1)))
        return float(mean), images_done * self.world, self.optimizer.param_groups[0]["lr"]

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, epoch: int, batch: int):
        """One optimizer step on one batch; returns its loss, or None when it was skipped."""
        tc = self.cfg.train
        x = images.to(self.device, non_blocking=True).float() / 255.0
        y = labels.to(self.device)
        if self.mix is not None:
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(batch_seed(tc.seed, epoch, self.rank, batch))
                if torch.rand(()) < tc.augment.mix_prob:
                    x, y = self.mix(x, y)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            logits = self.ddp_model(x)
        loss = self.criterion(logits.float(), y)
        bad = dist_utils.any_rank(not bool(torch.isfinite(loss).item()), self.device)
        self.optimizer.zero_grad(set_to_none=True)
        if bad:
            return None
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if tc.grad_clip > 0:
            norm = nn.utils.clip_grad_norm_(params, tc.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params]))
        if self.scaler.is_enabled():  # fp16: the scaler skips inf steps itself
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif dist_utils.any_rank(not bool(torch.isfinite(norm).item()), self.device):
            return None
        else:
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return float(loss.detach())

    @torch.no_grad()
    def evaluate(self) -> Dict[str, float]:
        """top-1 / top-5 / loss of the EMA (else raw) model on the val split, on rank 0."""
        metrics: Dict[str, float] = {}
        if self.main:
            from .evaluate import evaluate_classifier
            net = self.ema.module if self.ema is not None else unwrap(self.model)
            r = evaluate_classifier(net, self.val_loader, len(self.names), self.device,
                                    progress=self.progress)
            metrics = {"top1": r["top1"], "top5": r["top5"], "val/loss": r["loss"]}
            LOGGER.info("eval: top-1 %.2f%% | top-5 %.2f%% | loss %.4f (%d images)", r["top1"],
                        r["top5"], r["loss"], r["images"])
        dist_utils.barrier()
        return metrics

    def _end_epoch(self, epoch, loss, lr, metrics, epoch_time, images) -> None:
        if metrics:
            self.last_metrics = metrics
        if self.main:
            self.logger.log_epoch({"epoch": epoch + 1, "train/loss": loss, "lr": lr,
                                   "bad_steps": self.bad_steps_total, "epoch_time_s": epoch_time,
                                   "images_per_s": images / max(epoch_time, 1e-9), **metrics})
            if metrics and metrics["top1"] > self.best_fitness:
                self.best_fitness = metrics["top1"]
                self._save_best(epoch + 1)
            self.save_last(epoch + 1, 0)
            if not (self.run_dir / "best.pt").exists():
                self._save_best(epoch + 1)  # no evaluation yet: best.pt is the latest weights
        dist_utils.barrier()

    # ------------------------------------------------------------------ checkpoints
    def _state(self, epoch: int, batch: int, full: bool = True) -> dict:
        state = {"model": unwrap(self.model).state_dict(), "config": self.resolved_config,
                 "names": list(self.names), "epoch": epoch, "batch": batch,
                 "best_fitness": self.best_fitness, "metrics": dict(self.last_metrics),
                 "task": "classify"}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
            state["ema_updates"] = self.ema.updates
        if full:
            state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                         scaler=self.scaler.state_dict(), rng=rng_state(),
                         bad_steps_total=self.bad_steps_total, world_size=self.world)
        return state

    def _save_best(self, epoch: int) -> None:
        best = self._state(epoch, 0, full=False)
        if self.ema is not None:
            best.pop("model")  # best.pt = EMA weights only
        save_checkpoint(best, self.run_dir / "best.pt")

    def save_last(self, epoch: int, batch: int) -> None:
        if self.main:
            save_checkpoint(self._state(epoch, batch), self.run_dir / "last.pt")

    def _restore(self, ckpt: dict) -> None:
        load_state_strict(unwrap(self.model), ckpt["model"], what="resume checkpoint")
        if self.ema is not None and "ema" in ckpt:
            self.ema.load_state_dict(ckpt["ema"], ckpt.get("ema_updates", 0))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if "rng" in ckpt and ckpt.get("world_size", 1) == self.world:
            set_rng_state(ckpt["rng"])
        self.start_epoch, self.start_batch = int(ckpt["epoch"]), int(ckpt.get("batch", 0))
        self.best_fitness = float(ckpt.get("best_fitness", -1.0))
        self.bad_steps_total = int(ckpt.get("bad_steps_total", 0))
        self.last_metrics = dict(ckpt.get("metrics") or {})
        if ckpt.get("world_size", 1) != self.world and self.start_batch:
            LOGGER.warning("resuming with %d processes instead of %d: the interrupted epoch "
                           "restarts at its beginning", self.world, ckpt.get("world_size", 1))
            self.start_batch = 0
        if self.start_batch >= self.batches_per_epoch:
            self.start_epoch, self.start_batch = self.start_epoch + 1, 0
        if self.main:
            LOGGER.info("resuming at epoch %d, batch %d (of %d)", self.start_epoch + 1,
                        self.start_batch, self.batches_per_epoch)

    # ------------------------------------------------------------------ signals
    def _install_signal_handlers(self):
        def handler(signum, frame):
            if self.stop_signal is not None:
                raise KeyboardInterrupt
            self.stop_signal = signum
            LOGGER.warning("signal %d: saving last.pt after this step, then stopping", signum)

        old = {}
        with contextlib.suppress(ValueError):  # not the main thread
            for s in (signal.SIGTERM, signal.SIGINT):
                old[s] = signal.signal(s, handler)
        return old


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
