"""The training loop (YOLOX-style compact engine): one :class:`Trainer` per run.

``Trainer(cfg).train()`` builds the data, model, loss, optimizer, schedule and EMA from a
:class:`RunConfig`, then trains in ``runs/<name>/``. The loop, in one screen::

    before_train()                        runtime, run folder, data, model, optimization, resume
    for epoch in range(start, epochs):
        before_epoch()                    close mosaic, sampler epoch (+ resume position), bar
        for i, batch in loader:
            train_one_step(i, batch)      forward/backward; every `accumulate` batches:
                                          optimizer_step() -> after_optimizer_step(i)
        after_epoch()                     reduce losses, evaluate_and_save()
    after_train()

Everything a run needs to continue is in ``last.pt``: a resumed run starts at the same epoch
*and* batch, with the same weights, EMA, optimizer, lr step, AMP scaler and RNG streams. The
data of an epoch (order, augmentation, multi-scale size) is a function of ``(seed, epoch,
rank, position)`` only (:mod:`detector.data.sampler`), so a resumed epoch starts at its batch
without loading the ones before it and sees the same samples as an uninterrupted run, with any
number of data workers. See docs/training.md for what stays exact when a resumed run changes
the number of processes or the accumulation.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import time
import zlib
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, PathOrDict, save_config, to_dict
from . import distributed as dist_utils
from .checkpoint import (CheckpointError, load_checkpoint, load_detector_weights, load_state_strict,
                         save_checkpoint)
from .ema import ModelEMA, unwrap
from .logger import RunLogger, log_to_file, remove_log_file
from .optim import WarmupScheduler, build_optimizer
from .runtime import agree_run_dir, rng_state, set_rng_state, setup_process
from .train_config import RunConfig, parse_run_config

LOGGER = logging.getLogger("cspdet.train")
LOSS_KEYS = ("box", "obj", "cls", "total")
#: a debugging aid: when set, each rank appends one JSON line per batch it trains on
#: (epoch, batch, image ids, a CRC of the images and targets) to this file (``.rank<r>`` added
#: for ranks > 0), e.g. to compare a resumed run's batches with an uninterrupted run's
BATCH_LOG_ENV = "CSPDET_BATCH_LOG"


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a NaN/inf loss or gradient: the run cannot go on."""


class StopRequested(Exception):
    """SIGTERM/SIGINT: ``last.pt`` was written at the current batch; resume from it."""


class Trainer:
    """Trains a detector from a :class:`RunConfig` (or a path / dict + overrides).

    ``resume``: path of a ``last.pt``; the run continues in that file's folder with the
    config stored in it (``overrides`` may still change e.g. ``train.epochs``).
    """

    def __init__(self, cfg: Optional[PathOrDict | RunConfig] = None, overrides=(),
                 resume: Optional[str] = None, progress: bool = True):
        self.resume_ckpt = None
        self.run_dir_hint = None
        if resume:
            self.resume_ckpt = load_checkpoint(resume)
            if "optimizer" not in self.resume_ckpt:
                raise CheckpointError(f"{resume} holds no training state (optimizer, epoch); "
                                      "resume needs a last.pt, use weights=... to fine-tune")
            cfg = parse_run_config(self.resume_ckpt["config"], overrides)
            self.run_dir_hint = Path(resume).resolve().parent
        elif cfg is None:
            raise ConfigError("a config (--cfg) or a checkpoint to resume (--resume) is needed")
        self.cfg: RunConfig = cfg if isinstance(cfg, RunConfig) else parse_run_config(cfg, overrides)
        self.progress = progress
        self.stop_signal: Optional[int] = None
        self.logger: Optional[RunLogger] = None
        self._log_handler: Optional[logging.Handler] = None
        self._signal_handlers: dict = {}
        self._mosaic_closed = False
        self._batch_log = os.environ.get(BATCH_LOG_ENV) or None

    # ================================================================== the loop
    def train(self) -> Dict[str, Any]:
        """Run the whole schedule; returns the final metrics and the run folder."""
        try:
            self.before_train()
            for self.epoch in range(self.start_epoch, self.cfg.train.epochs):
                self.before_epoch()
                for i, batch in enumerate(self.train_loader, start=self.epoch_start_batch):
                    self.train_one_step(i, batch)
                self.after_epoch()
            return {"run_dir": str(self.run_dir), "metrics": dict(self.last_metrics),
                    "best_fitness": self.best_fitness}
        finally:
            self.after_train()

    # ================================================================== before / after train
    def before_train(self) -> None:
        """Everything the loop needs; resumes from ``last.pt`` when one was given."""
        self._setup_runtime()
        self._setup_run_dir()
        self._setup_data()
        self._setup_model()
        self._setup_optimization()
        self.start_epoch, self.start_batch = 0, 0
        self.best_fitness = -1.0
        self.bad_steps_total = 0
        self.last_metrics: Dict[str, float] = {}
        if self.resume_ckpt is not None:
            self._restore(self.resume_ckpt)
        if self.main:  # the folder is made only once data and model are known to work
            self._setup_run_files()
        self._install_signal_handlers()
        if self.start_epoch >= self.cfg.train.epochs:
            LOGGER.info("nothing to do: the checkpoint already finished %d epochs",
                        self.cfg.train.epochs)

    def after_train(self) -> None:
        for s, h in self._signal_handlers.items():
            signal.signal(s, h)
        self._signal_handlers = {}
        for loader in (getattr(self, "train_loader", None), getattr(self, "val_loader", None)):
            if loader is not None and hasattr(loader, "shutdown"):
                loader.shutdown()
        if self.logger is not None:
            self.logger.close()
        remove_log_file(self._log_handler)
        self._log_handler = None
        dist_utils.cleanup()

    def _setup_runtime(self) -> None:
        self.device, self.distributed, self.rank, self.world = setup_process(self.cfg.train)
        self.main = self.rank == 0

    def _setup_run_dir(self) -> None:
        """Rank 0 names the folder (``name``, ``name2`` ...), the other ranks follow."""
        tc = self.cfg.train
        self.run_dir = agree_run_dir(tc.save_dir, tc.name, tc.exist_ok, self.run_dir_hint)

    def _setup_data(self) -> None:
        from ..data import prepare_data
        if self.main:  # generates synthetic data on first use: once, before the other ranks look
            prepare_data(self.cfg.data)
        dist_utils.barrier()
        self.data_cfg = prepare_data(self.cfg.data)
        self.names = list(self.data_cfg.names)
        if not self.names:
            raise ConfigError(f"data config {self.data_cfg.source or '(inline)'} names no classes")
        self.train_set, self.train_loader = self._build_train_data(self.cfg.train.augment)
        self.val_set = self.val_loader = None
        if self.main:
            self.val_set, self.val_loader = self._build_val_data()

    def _setup_model(self) -> None:
        from ..models.builder import build_model
        from ..models.loss import YOLOLoss
        model = build_model({"model": dict(self.cfg.model, num_classes=len(self.names))})
        self.model_config = model.config
        if self.resume_ckpt is None:
            self._load_initial_weights(model)
        self.criterion = YOLOLoss(model)
        model.to(self.device)
        if self.distributed and self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif self.distributed and self.main:
            LOGGER.info("SyncBatchNorm needs CUDA; on CPU each process keeps its own BN statistics")
        self.model = self.ddp_model = model
        if self.distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.stride = max(unwrap(model).strides)

    def _setup_optimization(self) -> None:
        """Accumulation to ``nominal_batch_size``, optimizer, warm-up + schedule, EMA, AMP."""
        tc = self.cfg.train
        self.batches_per_epoch = len(self.train_loader)
        per_step = tc.batch_size * self.world
        self.accumulate = max(1, round(tc.nominal_batch_size / per_step)) if tc.nominal_batch_size else 1
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / self.accumulate)
        self.total_steps = self.steps_per_epoch * tc.epochs
        self.warmup_steps = 0
        if tc.warmup_epochs > 0:
            self.warmup_steps = max(round(tc.warmup_epochs * self.steps_per_epoch), tc.warmup_min_iters)
            self.warmup_steps = min(self.warmup_steps, self.total_steps // 2)
        self.optimizer = build_optimizer(self.model, tc)
        self.scheduler = WarmupScheduler(self.optimizer, tc, self.total_steps, self.warmup_steps)
        self.ema = ModelEMA(self.model, tc.ema_decay, tc.ema_tau) if tc.ema else None
        self.amp_dtype = None
        if tc.amp != "off":
            if self.device.type == "cuda":
                self.amp_dtype = torch.bfloat16 if tc.amp == "bf16" else torch.float16
            elif tc.amp == "bf16" and tc.cpu_amp:
                self.amp_dtype = torch.bfloat16
            elif self.main:
                LOGGER.info("train.amp=%s applies to CUDA only (bf16 on CPU with train.cpu_amp=true); "
                            "training in float32 on %s", tc.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def _setup_run_files(self) -> None:
        """Rank 0: the run folder, ``train.log``, ``config.yaml``, the results logger."""
        tc = self.cfg.train
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._log_handler = log_to_file(self.run_dir / "train.log")
        self.logger = RunLogger(self.run_dir, tensorboard=tc.tensorboard, plots=tc.plots)
        self.logger.keep_epochs_before(self.start_epoch + (1 if self.start_batch else 0))
        save_config(self.resolved_config, self.run_dir / "config.yaml")
        LOGGER.info("run folder %s | %s (%d threads) | %d train images, %d classes | batch %d x %d "
                    "process(es), accumulate %d | %d steps (%d warm-up)", self.run_dir, self.device,
                    torch.get_num_threads(), len(self.train_set), len(self.names), tc.batch_size,
                    self.world, self.accumulate, self.total_steps, self.warmup_steps)

    # ================================================================== data
    def _build_train_data(self, augment):
        from ..data import build_dataset
        tc = self.cfg.train
        dataset = build_dataset(self.data_cfg, "train", tc.img_size, augment=augment, cache=tc.cache,
                                seed=tc.seed + self.rank)
        return dataset, self._build_train_loader(dataset)

    def _build_train_loader(self, dataset):
        """This rank's share of each epoch; order and augmentation keyed on (seed, epoch, rank,
        position) by the loader's :class:`~detector.data.sampler.ResumableSampler`."""
        from ..data import build_dataloader
        tc = self.cfg.train
        return build_dataloader(dataset, tc.batch_size, tc.workers, shuffle=True, seed=tc.seed,
                                distributed=self.distributed, rank=self.rank, world_size=self.world)

    def _build_val_data(self):
        from ..data import build_dataloader, build_dataset
        tc, ec = self.cfg.train, self.cfg.eval
        dataset = build_dataset(self.data_cfg, "val", ec.img_size, augment=None, cache=tc.cache)
        loader = build_dataloader(dataset, ec.batch_size or tc.batch_size, min(tc.workers, 2),
                                  shuffle=False, seed=tc.seed, distributed=False)
        return dataset, loader

    def _load_initial_weights(self, model) -> None:
        """``model.backbone_weights`` (ImageNet) then ``weights`` (a detector checkpoint)."""
        if getattr(model, "backbone_weights", None):
            from ..models import load_pretrained_backbone
            load_pretrained_backbone(model.backbone, model.backbone_weights)
            if dist_utils.is_main_process():
                LOGGER.info("backbone initialised from %s", model.backbone_weights)
        if self.cfg.weights:
            load_detector_weights(model, self.cfg.weights)

    @property
    def resolved_config(self) -> dict:
        """The config as run: the model's full config and the resolved data section."""
        out = self.cfg.to_dict()
        out["model"] = to_dict(self.model_config)
        out["data"] = to_dict(dataclasses.asdict(self.data_cfg))
        return out

    # ================================================================== epoch
    def before_epoch(self) -> None:
        """Mosaic off near the end, the sampler at (epoch, resume position), fresh meters."""
        epoch, tc = self.epoch, self.cfg.train
        self._maybe_close_mosaic(epoch)
        self.epoch_start_batch = self.start_batch if epoch == self.start_epoch else 0
        # a resumed epoch starts at its batch: the samples before it are never loaded
        self.train_loader.sampler.set_epoch(epoch, start=self.epoch_start_batch * tc.batch_size)
        self.train_loader.epoch = epoch  # the loader's pass number, named in its skip reports
        self.model.train()
        self.loss_sums = dict.fromkeys(LOSS_KEYS, 0.0)
        self.good_batches, self.images_done = 0, 0
        self.consecutive_bad, self.window_bad = 0, False
        self.optimizer.zero_grad(set_to_none=True)
        self.epoch_t0 = time.time()
        self.bar = None
        if self.main and self.progress:
            from tqdm import tqdm
            self.bar = tqdm(total=self.batches_per_epoch, initial=self.epoch_start_batch,
                            desc=f"epoch {epoch + 1}/{tc.epochs}", unit="batch", dynamic_ncols=True)

    def after_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
        means = {k: torch.tensor(v / max(self.good_batches, 1)) for k, v in self.loss_sums.items()}
        losses = {k: float(v) for k, v in dist_utils.all_reduce_dict(means).items()}
        epoch_time = time.time() - self.epoch_t0
        interval = self.cfg.eval.interval
        due = self.epoch + 1 == self.cfg.train.epochs or (interval > 0 and (self.epoch + 1) % interval == 0)
        self.evaluate_and_save(losses, epoch_time, evaluate=due)

    def _maybe_close_mosaic(self, epoch: int) -> None:
        tc = self.cfg.train
        aug = tc.augment
        if aug is None or tc.close_mosaic <= 0 or epoch < tc.epochs - tc.close_mosaic or self._mosaic_closed:
            return
        self._mosaic_closed = True
        if aug.mosaic <= 0 and aug.mixup <= 0:
            return
        if self.main:
            LOGGER.info("epoch %d: mosaic and mixup off for the last %d epochs", epoch + 1, tc.close_mosaic)
        self.train_set.set_augment(dataclasses.replace(aug, mosaic=0.0, mixup=0.0),
                                   seed=tc.seed + self.rank)
        # persistent workers hold their own dataset copy: a new loader picks the change up
        self.train_loader.shutdown()
        self.train_loader = self._build_train_loader(self.train_set)

    # ================================================================== step
    def train_one_step(self, i: int, batch: dict) -> None:
        """Forward and backward of batch ``i``; the optimizer steps when it closes a window of
        ``accumulate`` batches (DDP all-reduces gradients only then)."""
        acc, nb = self.accumulate, self.batches_per_epoch
        window_start = (i // acc) * acc
        window = min(acc, nb - window_start)
        closes_window = i == window_start + window - 1
        images, targets = self.preprocess(i, batch)
        x = images.float() / 255.0
        no_sync = self.distributed and not closes_window
        with self.ddp_model.no_sync() if no_sync else contextlib.nullcontext():
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                raw = self.ddp_model(x)
            loss, parts = self.criterion([r.float() for r in raw], targets)
            # every rank must agree before backward, or DDP's gradient all-reduce hangs
            bad = dist_utils.any_rank(not bool(torch.isfinite(loss).item()), self.device)
            if not bad:
                self.scaler.scale(loss / window).backward()
        self.window_bad |= bad
        if not bad:
            for k in ("box", "obj", "cls"):
                self.loss_sums[k] += float(parts[k])
            self.loss_sums["total"] += float(loss.detach())
            self.good_batches += 1
        self.images_done += len(x)
        if closes_window:
            self.after_window(i)
        self._update_bar(x.shape[-1])

    def preprocess(self, i: int, batch: dict):
        """Images and targets on the device; with ``multi_scale`` resized to a size that is a
        function of ``(seed, epoch, batch)``, the same on every rank."""
        from ..data.loader import random_size, rescale_batch
        tc = self.cfg.train
        images = batch["images"].to(self.device, non_blocking=True)
        targets = [t.to(self.device) for t in batch["targets"]]
        if tc.multi_scale is not None:
            size = random_size(np.random.default_rng([tc.seed, self.epoch, i]), tc.img_size,
                               tc.multi_scale, self.stride)
            scaled = rescale_batch({"images": images, "targets": targets, "meta": batch["meta"]}, size)
            images, targets = scaled["images"], scaled["targets"]
        if self._batch_log:
            self._log_batch(i, batch, images, targets)
        return images, targets

    def after_window(self, i: int) -> None:
        """Optimizer step (skipped when any rank saw a non-finite loss or gradient), lr step,
        EMA; then the stop request and the periodic mid-epoch checkpoint."""
        stepped = False
        if not dist_utils.any_rank(self.window_bad, self.device):
            stepped = self.optimizer_step()
        self.optimizer.zero_grad(set_to_none=True)
        self.window_bad = False
        if stepped:
            self.consecutive_bad = 0
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update(self.model)
        else:
            self._count_bad_step(i)
        if dist_utils.any_rank(self.stop_signal is not None, self.device):
            self.save_last(self.epoch, i + 1)
            if self.bar is not None:
                self.bar.close()
            raise StopRequested(f"stopped by signal at epoch {self.epoch + 1}, batch {i + 1}; "
                                f"resume with --resume {self.run_dir / 'last.pt'}")
        interval = self.cfg.train.checkpoint_interval
        if interval and self.scheduler.last_step % interval == 0 and i + 1 < self.batches_per_epoch:
            self.save_last(self.epoch, i + 1)

    def optimizer_step(self) -> bool:
        """Unscale, clip, step; False when the gradient is not finite (step skipped)."""
        tc = self.cfg.train
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        if tc.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params]))
        finite = bool(torch.isfinite(norm).item())
        if self.scaler.is_enabled():
            # fp16: an inf gradient is the scaler calibrating (it skips the step and halves its
            # scale), not a broken run; a non-finite *loss* is caught before backward
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return True
        if not finite:
            return False
        self.optimizer.step()
        return True

    def _count_bad_step(self, i: int) -> None:
        self.consecutive_bad += 1
        self.bad_steps_total += 1
        if self.main:
            LOGGER.warning("epoch %d batch %d: non-finite loss or gradient, step skipped "
                           "(%d in a row, %d in total)", self.epoch + 1, i + 1,
                           self.consecutive_bad, self.bad_steps_total)
        if self.consecutive_bad >= self.cfg.train.max_bad_steps:
            if self.bar is not None:
                self.bar.close()
            raise NonFiniteLossError(
                f"{self.consecutive_bad} optimizer steps in a row had a non-finite loss or "
                f"gradient (epoch {self.epoch + 1}, batch {i + 1}); stopping. The last good "
                f"checkpoint is {self.run_dir / 'last.pt'}. Lower train.lr, raise "
                "train.warmup_epochs, set train.amp=off or check the data.")

    def _update_bar(self, size: int) -> None:
        if self.bar is None:
            return
        means = {k: v / max(self.good_batches, 1) for k, v in self.loss_sums.items()}
        rate = self.images_done * self.world / max(time.time() - self.epoch_t0, 1e-9)
        self.bar.set_postfix(box=f"{means['box']:.4f}", obj=f"{means['obj']:.4f}",
                             cls=f"{means['cls']:.4f}", size=size, img_s=f"{rate:.1f}",
                             lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
        self.bar.update(1)

    def _log_batch(self, i: int, batch: dict, images: torch.Tensor, targets) -> None:
        crc = zlib.crc32(images.cpu().contiguous().numpy().tobytes())
        for t in targets:
            crc = zlib.crc32(t.cpu().contiguous().numpy().tobytes(), crc)
        path = self._batch_log + (f".rank{self.rank}" if self.rank else "")
        with open(path, "a") as f:
            f.write(json.dumps({"epoch": self.epoch, "batch": i, "size": int(images.shape[-1]),
                                "ids": [m["image_id"] for m in batch["meta"]], "crc": crc}) + "\n")

    # ================================================================== evaluation, checkpoints
    @torch.no_grad()
    def evaluate(self) -> Dict[str, float]:
        """COCO metrics of the EMA (else raw) model on the val split, on rank 0."""
        metrics: Dict[str, float] = {}
        if self.main:
            from ..evaluation import evaluate
            ec = self.cfg.eval
            net = self.ema.module if self.ema is not None else unwrap(self.model)
            result = evaluate(net, self.val_loader, conf_thres=ec.conf_thres, iou_thres=ec.iou_thres,
                              max_det=ec.max_det, device=self.device, progress=self.progress)
            metrics = {k: float(result[k]) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")
                       if k in result}
            LOGGER.info("eval: AP %.4f | AP50 %.4f | AP75 %.4f", metrics.get("AP", float("nan")),
                        metrics.get("AP50", float("nan")), metrics.get("AP75", float("nan")))
        dist_utils.barrier()
        return metrics

    def evaluate_and_save(self, losses: Dict[str, float], epoch_time: float, evaluate: bool) -> None:
        """Evaluate when due, log the epoch's row; rank 0 writes best.pt (when AP improved, or
        while there is none yet) and last.pt (resume at the next epoch)."""
        metrics = self.evaluate() if evaluate else {}
        if metrics:
            self.last_metrics = metrics
        if self.main:
            epoch = self.epoch
            lr = self.optimizer.param_groups[0]["lr"]
            images = self.images_done * self.world
            self.logger.log_epoch({"epoch": epoch + 1, "lr": lr, "bad_steps": self.bad_steps_total,
                                   "epoch_time_s": epoch_time, "images_per_s": images / max(epoch_time, 1e-9),
                                   **{f"train/{k}": v for k, v in losses.items()}, **metrics})
            improved = bool(metrics) and metrics.get("AP", 0.0) > self.best_fitness
            if improved:
                self.best_fitness = metrics.get("AP", 0.0)
            self.save_last(epoch + 1, 0)
            if improved or not (self.run_dir / "best.pt").exists():
                # no evaluation yet: best.pt is the latest EMA, so the file always exists
                self.save_best(epoch + 1)
        dist_utils.barrier()

    def _state(self, epoch: int, batch: int, full: bool = True) -> dict:
        """Checkpoint dict; ``epoch``/``batch`` = where a resumed run starts."""
        state = {
            "model": unwrap(self.model).state_dict(),
            "config": self.resolved_config,
            "names": list(self.names),
            "epoch": epoch,
            "batch": batch,
            "best_fitness": self.best_fitness,
            "metrics": dict(self.last_metrics),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
            state["ema_updates"] = self.ema.updates
        if full:
            state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                         scaler=self.scaler.state_dict(), rng=rng_state(),
                         bad_steps_total=self.bad_steps_total, world_size=self.world,
                         accumulate=self.accumulate)
        return state

    def save_last(self, epoch: int, batch: int) -> None:
        if self.main:
            save_checkpoint(self._state(epoch, batch), self.run_dir / "last.pt")

    def save_best(self, epoch: int) -> None:
        best = self._state(epoch, 0, full=False)
        if self.ema is not None:
            best.pop("model")  # best.pt = EMA weights only
        save_checkpoint(best, self.run_dir / "best.pt")

    def _restore(self, ckpt: dict) -> None:
        load_state_strict(unwrap(self.model), ckpt["model"], what="resume checkpoint")
        tc = self.cfg.train
        if self.ema is not None:
            if "ema" in ckpt:
                self.ema.load_state_dict(ckpt["ema"], ckpt.get("ema_updates", 0))
            else:
                self.ema = ModelEMA(self.model, tc.ema_decay, tc.ema_tau)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        same_world = ckpt.get("world_size", 1) == self.world
        if "rng" in ckpt and same_world:
            set_rng_state(ckpt["rng"])
        self.start_epoch, self.start_batch = int(ckpt["epoch"]), int(ckpt.get("batch", 0))
        self.best_fitness = float(ckpt.get("best_fitness", -1.0))
        self.bad_steps_total = int(ckpt.get("bad_steps_total", 0))
        if self.start_batch and (not same_world or ckpt.get("accumulate", self.accumulate) != self.accumulate):
            # a batch index means another position with another partition or window
            LOGGER.warning("processes (%s -> %d) or gradient accumulation (%s -> %d) changed; "
                           "resuming at the next epoch", ckpt.get("world_size", 1), self.world,
                           ckpt.get("accumulate"), self.accumulate)
            self.start_epoch, self.start_batch = self.start_epoch + 1, 0
        if self.start_batch >= self.batches_per_epoch:
            self.start_epoch, self.start_batch = self.start_epoch + 1, 0
        if self.main:
            LOGGER.info("resuming at epoch %d, batch %d (of %d)", self.start_epoch + 1,
                        self.start_batch, self.batches_per_epoch)

    # ================================================================== signals
    def _install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: finish the current step, write last.pt, stop (SIGKILL cannot be caught:
        use ``train.checkpoint_interval`` for that). A second signal interrupts at once."""
        def handler(signum, frame):
            if self.stop_signal is not None:
                raise KeyboardInterrupt
            self.stop_signal = signum
            LOGGER.warning("signal %d: saving last.pt after this step, then stopping", signum)

        try:
            for s in (signal.SIGTERM, signal.SIGINT):
                self._signal_handlers[s] = signal.signal(s, handler)
        except ValueError:  # not the main thread
            pass
