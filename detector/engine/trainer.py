"""The training loop (YOLOX-style compact engine): one :class:`Trainer` per run.

``Trainer(cfg).train()`` builds the data, model, loss, optimizer, schedule and EMA from a
:class:`RunConfig`, then trains in ``runs/<name>/``. Everything a run needs to continue is in
``last.pt``: a resumed run starts at the same epoch *and* batch, with the same weights, EMA,
optimizer, lr step, AMP scaler and RNG streams.

Resume exactness: the data order of every epoch and the augmentation randomness are derived
from ``(seed, epoch)`` (the sampler generator and, with ``workers: 0``, the dataset's
augmentation RNG are re-seeded at each epoch start); a resumed run re-reads (without training
on) the batches of the interrupted epoch it had already used, so it sees the same batches as
an uninterrupted run. Multi-scale sizes are a function of ``(seed, epoch, batch)``. With
``workers > 0`` the order is the same but the persistent workers' augmentation streams start
afresh, so the resumed run is statistically, not bitwise, the same.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import time
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, PathOrDict, save_config, to_dict
from . import distributed as dist_utils
from .checkpoint import CheckpointError, load_checkpoint, load_state_strict, model_state, save_checkpoint
from .ema import ModelEMA, unwrap
from .logger import RunLogger, log_to_file, next_run_dir, remove_log_file
from .optim import WarmupScheduler, build_optimizer
from .runtime import configure_threads, rng_state, seed_everything, select_device, set_rng_state
from .train_config import RunConfig, parse_run_config

LOGGER = logging.getLogger("cspdet.train")


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a NaN/inf loss or gradient: the run cannot go on."""


class StopRequested(Exception):
    """SIGTERM/SIGINT: ``last.pt`` was written at the current batch; resume from it."""


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (int(seed) * 1_000_003 + epoch * 7919 + rank * 104_729) % 2 ** 31


# ---------------------------------------------------------------------------- trainer
class Trainer:
    """Trains a detector from a :class:`RunConfig` (or a path / dict + overrides).

    ``resume``: path of a ``last.pt``; the run continues in that file's folder with the
    config stored in it (``overrides`` may still change e.g. ``train.epochs``).
    """

    def __init__(self, cfg: Optional[PathOrDict | RunConfig] = None, overrides=(),
                 resume: Optional[str] = None, progress: bool = True):
        self.resume_ckpt = None
        if resume:
            self.resume_ckpt = load_checkpoint(resume)
            if "optimizer" not in self.resume_ckpt:
                raise CheckpointError(f"{resume} holds no training state (optimizer, epoch); "
                                      "resume needs a last.pt, use weights=... to fine-tune")
            cfg = parse_run_config(self.resume_ckpt["config"], overrides)
            self.run_dir_hint = Path(resume).resolve().parent
        else:
            if cfg is None:
                raise ConfigError("a config (--cfg) or a checkpoint to resume (--resume) is needed")
            cfg = cfg if isinstance(cfg, RunConfig) else parse_run_config(cfg, overrides)
            self.run_dir_hint = None
        self.cfg: RunConfig = cfg
        self.progress = progress
        self.stop_signal: Optional[int] = None
        self.logger: Optional[RunLogger] = None
        self._log_handler: Optional[logging.Handler] = None

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg, tc = self.cfg, self.cfg.train
        self.device = select_device(tc.device)
        self.distributed = dist_utils.init_distributed(self.device)
        self.rank, self.world = dist_utils.rank(), dist_utils.world_size()
        self.main = self.rank == 0
        seed_everything(tc.seed, self.rank, tc.deterministic)
        configure_threads(tc.threads, self.world, self.device, tc.deterministic)

        # run folder (rank 0 decides, the others follow)
        if self.run_dir_hint is not None:
            run_dir = self.run_dir_hint
        else:
            run_dir = next_run_dir(tc.save_dir, tc.name, tc.exist_ok) if self.main else None
        self.run_dir = Path(dist_utils.broadcast_object(str(run_dir) if run_dir else None))

        # data
        from ..data import prepare_data
        if self.main:  # generates synthetic data on first use: once, before the other ranks look
            prepare_data(cfg.data)
        dist_utils.barrier()
        self.data_cfg = prepare_data(cfg.data)
        names = list(self.data_cfg.names)
        if not names:
            raise ConfigError(f"data config {self.data_cfg.source or '(inline)'} names no classes")
        self.names = names
        self.train_set, self.train_loader = self._build_train_data(tc.augment)
        self.val_set = self.val_loader = None
        if self.main:
            self.val_set, self.val_loader = self._build_val_data()

        # model
        from ..models.builder import build_model
        from ..models.loss import YOLOLoss
        model_cfg = dict(cfg.model)
        model_cfg["num_classes"] = len(names)
        model = build_model({"model": model_cfg})
        self.model_config = model.config
        if self.resume_ckpt is None:
            self._load_initial_weights(model)
        self.criterion = YOLOLoss(model)
        model.to(self.device)
        if self.distributed and self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif self.distributed and self.main:
            LOGGER.info("SyncBatchNorm needs CUDA; on CPU each process keeps its own BN statistics")
        self.model = model
        self.ddp_model = model
        if self.distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        # optimization
        self.batches_per_epoch = len(self.train_loader)
        per_step = tc.batch_size * self.world
        self.accumulate = max(1, round(tc.nominal_batch_size / per_step)) if tc.nominal_batch_size else 1
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / self.accumulate)
        total_steps = self.steps_per_epoch * tc.epochs
        warmup = 0
        if tc.warmup_epochs > 0:
            warmup = max(round(tc.warmup_epochs * self.steps_per_epoch), tc.warmup_min_iters)
            warmup = min(warmup, total_steps // 2)
        self.optimizer = build_optimizer(model, tc)
        self.scheduler = WarmupScheduler(self.optimizer, tc, total_steps, warmup)
        self.ema = ModelEMA(model, tc.ema_decay, tc.ema_tau) if tc.ema else None
        self.amp_dtype = None
        if tc.amp != "off":
            if self.device.type == "cuda":
                self.amp_dtype = torch.bfloat16 if tc.amp == "bf16" else torch.float16
            elif self.main:
                LOGGER.info("train.amp=%s applies to CUDA only; training in float32 on %s",
                            tc.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        # progress counters
        self.start_epoch, self.start_batch = 0, 0
        self.best_fitness = -1.0
        self.bad_steps_total = 0
        self.last_metrics: Dict[str, float] = {}
        if self.resume_ckpt is not None:
            self._restore(self.resume_ckpt)
        self.logger = None
        if self.main:  # the folder is made only once data and model are known to work
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._log_handler = log_to_file(self.run_dir / "train.log")
            self.logger = RunLogger(self.run_dir, tensorboard=tc.tensorboard, plots=tc.plots)
            self.logger.keep_epochs_before(self.start_epoch + (1 if self.start_batch else 0))
            self.resolved_config = self._resolved_config()
            save_config(self.resolved_config, self.run_dir / "config.yaml")
            LOGGER.info("run folder %s | %s (%d threads) | %d train images, %d classes | batch %d x %d "
                        "process(es), accumulate %d | %d steps (%d warm-up)", self.run_dir, self.device,
                        torch.get_num_threads(),
                        len(self.train_set), len(names), tc.batch_size, self.world,
                        self.accumulate, total_steps, warmup)

    def _build_train_data(self, augment):
        from ..data import build_dataset, build_dataloader
        tc = self.cfg.train
        dataset = build_dataset(self.data_cfg, "train", tc.img_size, augment=augment, cache=tc.cache,
                                seed=tc.seed + self.rank)
        loader = build_dataloader(dataset, tc.batch_size, tc.workers, shuffle=True,
                                  seed=tc.seed, distributed=self.distributed)
        return dataset, loader

    def _build_val_data(self):
        from ..data import build_dataset, build_dataloader
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

    def _resolved_config(self) -> dict:
        out = self.cfg.to_dict()
        out["model"] = to_dict(self.model_config)
        data = to_dict(dataclasses.asdict(self.data_cfg))
        out["data"] = data
        return out

    # ------------------------------------------------------------------ checkpoints
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

    def _restore(self, ckpt: dict) -> None:
        load_state_strict(unwrap(self.model), ckpt["model"], what="resume checkpoint")
        if self.ema is not None:
            if "ema" in ckpt:
                self.ema.load_state_dict(ckpt["ema"], ckpt.get("ema_updates", 0))
            else:
                self.ema = ModelEMA(self.model, self.cfg.train.ema_decay, self.cfg.train.ema_tau)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if "rng" in ckpt and ckpt.get("world_size", 1) == self.world:
            set_rng_state(ckpt["rng"])
        self.start_epoch, self.start_batch = int(ckpt["epoch"]), int(ckpt.get("batch", 0))
        self.best_fitness = float(ckpt.get("best_fitness", -1.0))
        self.bad_steps_total = int(ckpt.get("bad_steps_total", 0))
        if ckpt.get("accumulate", self.accumulate) != self.accumulate and self.start_batch:
            LOGGER.warning("gradient accumulation changed (%s -> %s); resuming at the next epoch",
                           ckpt.get("accumulate"), self.accumulate)
            self.start_epoch, self.start_batch = self.start_epoch + 1, 0
        if self.start_batch >= self.batches_per_epoch:
            self.start_epoch, self.start_batch = self.start_epoch + 1, 0
        if dist_utils.is_main_process():
            LOGGER.info("resuming at epoch %d, batch %d (of %d)", self.start_epoch + 1,
                        self.start_batch, self.batches_per_epoch)

    # ------------------------------------------------------------------ loop
    def train(self) -> Dict[str, Any]:
        """Run the whole schedule; returns the final metrics and the run folder."""
        handlers = {}
        try:
            self._setup()
            handlers = self._install_signal_handlers()
            tc = self.cfg.train
            if self.start_epoch >= tc.epochs:
                LOGGER.info("nothing to do: the checkpoint already finished %d epochs", tc.epochs)
            for epoch in range(self.start_epoch, tc.epochs):
                self._maybe_close_mosaic(epoch)
                t0 = time.time()
                losses, images, lr = self.train_one_epoch(epoch, self.start_batch if epoch == self.start_epoch else 0)
                epoch_time = time.time() - t0
                metrics = {}
                last = epoch + 1 == tc.epochs
                interval = self.cfg.eval.interval
                if last or (interval > 0 and (epoch + 1) % interval == 0):
                    metrics = self.evaluate()
                self._end_epoch(epoch, losses, lr, metrics, epoch_time, images)
            return {"run_dir": str(self.run_dir), "metrics": dict(self.last_metrics),
                    "best_fitness": self.best_fitness}
        finally:
            self._restore_signal_handlers(handlers)
            if self.logger is not None:
                self.logger.close()
            remove_log_file(getattr(self, "_log_handler", None))
            dist_utils.cleanup()

    def _maybe_close_mosaic(self, epoch: int) -> None:
        tc = self.cfg.train
        aug = tc.augment
        if (aug is None or tc.close_mosaic <= 0 or epoch < tc.epochs - tc.close_mosaic
                or getattr(self, "_mosaic_closed", False)):
            return
        if aug.mosaic > 0 or aug.mixup > 0:
            if self.main:
                LOGGER.info("epoch %d: mosaic and mixup off for the last %d epochs", epoch + 1,
                            tc.close_mosaic)
            closed = dataclasses.replace(aug, mosaic=0.0, mixup=0.0)
            if hasattr(self.train_set, "set_augment"):
                # persistent workers hold their own dataset copy: a new loader picks the change up
                from ..data import build_dataloader
                self.train_set.set_augment(closed, seed=self.cfg.train.seed + self.rank)
                del self.train_loader  # let its workers go before new ones start
                self.train_loader = build_dataloader(self.train_set, tc.batch_size, tc.workers,
                                                     shuffle=True, seed=tc.seed,
                                                     distributed=self.distributed)
            else:
                self.train_set, self.train_loader = self._build_train_data(closed)
        self._mosaic_closed = True

    def _seed_epoch(self, epoch: int) -> None:
        """Data order and augmentation of ``epoch`` depend on (seed, epoch) only."""
        loader, seed = self.train_loader, self.cfg.train.seed
        if getattr(loader, "generator", None) is not None:
            loader.generator.manual_seed(epoch_seed(seed, epoch))
        if hasattr(loader, "epoch"):
            loader.epoch = epoch  # the loader's DistributedSampler.set_epoch
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if self.cfg.train.workers == 0 and hasattr(self.train_set, "reseed"):
            s = epoch_seed(seed, epoch, self.rank)
            if getattr(self.train_set, "augment", None) is not None:
                # a fresh transform: reseed() alone leaves some albumentations state behind
                self.train_set.set_augment(self.train_set.augment, seed=s)
            self.train_set.reseed(s)

    def train_one_epoch(self, epoch: int, start_batch: int = 0):
        from ..data.loader import random_size, rescale_batch

        tc = self.cfg.train
        model, ddp_model = self.model, self.ddp_model
        model.train()
        self._seed_epoch(epoch)
        nb = self.batches_per_epoch
        acc = self.accumulate
        sums = {"box": 0.0, "obj": 0.0, "cls": 0.0, "total": 0.0}
        n_seen, images_done = 0, 0
        consecutive_bad = 0
        stride = max(unwrap(model).strides)
        iterator = iter(self.train_loader)
        bar = None
        if self.main and self.progress:
            from tqdm import tqdm
            bar = tqdm(total=nb, initial=start_batch, desc=f"epoch {epoch + 1}/{tc.epochs}",
                       unit="batch", dynamic_ncols=True)
        t_start = time.time()
        self.optimizer.zero_grad(set_to_none=True)
        window_bad = False
        for i in range(nb):
            batch = next(iterator)
            if i < start_batch:
                continue  # replay: the same batches as the interrupted run, already trained on
            window_start = (i // acc) * acc
            window = min(acc, nb - window_start)
            closes_window = i == window_start + window - 1

            images = batch["images"].to(self.device, non_blocking=True)
            targets = [t.to(self.device) for t in batch["targets"]]
            if tc.multi_scale is not None:
                rng = np.random.default_rng([tc.seed, epoch, i])
                size = random_size(rng, tc.img_size, tc.multi_scale, stride)
                scaled = rescale_batch({"images": images, "targets": targets,
                                        "meta": batch["meta"]}, size)
                images, targets = scaled["images"], scaled["targets"]
            x = images.float() / 255.0

            sync_ctx = (ddp_model.no_sync() if self.distributed and not closes_window
                        else contextlib.nullcontext())
            with sync_ctx:
                with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None):
                    raw = ddp_model(x)
                loss, parts = self.criterion([r.float() for r in raw], targets)
                # every rank must agree before backward, or DDP's gradient all-reduce hangs
                bad = dist_utils.any_rank(not bool(torch.isfinite(loss).item()), self.device)
                if not bad:
                    self.scaler.scale(loss / window).backward()
            window_bad |= bad

            if closes_window:
                stepped = False
                bad_any = dist_utils.any_rank(window_bad, self.device)
                if not bad_any:
                    stepped = self._optimizer_step()
                self.optimizer.zero_grad(set_to_none=True)
                window_bad = False
                if stepped:
                    consecutive_bad = 0
                    self.scheduler.step()
                    if self.ema is not None:
                        self.ema.update(model)
                else:
                    consecutive_bad += 1
                    self.bad_steps_total += 1
                    if self.main:
                        LOGGER.warning("epoch %d batch %d: non-finite loss or gradient, step skipped "
                                       "(%d in a row, %d in total)", epoch + 1, i + 1,
                                       consecutive_bad, self.bad_steps_total)
                    if consecutive_bad >= tc.max_bad_steps:
                        if bar is not None:
                            bar.close()
                        raise NonFiniteLossError(
                            f"{consecutive_bad} optimizer steps in a row had a non-finite loss or "
                            f"gradient (epoch {epoch + 1}, batch {i + 1}); stopping. The last good "
                            f"checkpoint is {self.run_dir / 'last.pt'}. Lower train.lr, raise "
                            "train.warmup_epochs, set train.amp=off or check the data.")
                stop = dist_utils.any_rank(self.stop_signal is not None, self.device)
                if stop:
                    self.save_last(epoch, i + 1)
                    if bar is not None:
                        bar.close()
                    raise StopRequested(f"stopped by signal at epoch {epoch + 1}, batch {i + 1}; "
                                        f"resume with --resume {self.run_dir / 'last.pt'}")
                if (tc.checkpoint_interval and self.scheduler.last_step % tc.checkpoint_interval == 0
                        and i + 1 < nb):
                    self.save_last(epoch, i + 1)

            if not bad:
                for k in ("box", "obj", "cls"):
                    sums[k] += float(parts[k])
                sums["total"] += float(loss.detach())
                n_seen += 1
            images_done += len(x)
            if bar is not None:
                elapsed = time.time() - t_start
                means = {k: v / max(n_seen, 1) for k, v in sums.items()}
                bar.set_postfix(box=f"{means['box']:.4f}", obj=f"{means['obj']:.4f}",
                                cls=f"{means['cls']:.4f}", size=x.shape[-1],
                                img_s=f"{images_done * self.world / max(elapsed, 1e-9):.1f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
                bar.update(1)
        if bar is not None:
            bar.close()
        means = {k: torch.tensor(v / max(n_seen, 1)) for k, v in sums.items()}
        means = {k: float(v) for k, v in dist_utils.all_reduce_dict(means).items()}
        return means, images_done * self.world, self.optimizer.param_groups[0]["lr"]

    def _optimizer_step(self) -> bool:
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

    def _end_epoch(self, epoch, losses, lr, metrics, epoch_time, images) -> None:
        if metrics:
            self.last_metrics = metrics
        if self.main:
            row = {"epoch": epoch + 1, "lr": lr, "bad_steps": self.bad_steps_total,
                   "epoch_time_s": epoch_time, "images_per_s": images / max(epoch_time, 1e-9),
                   **{f"train/{k}": v for k, v in losses.items()}, **metrics}
            self.logger.log_epoch(row)
            if metrics:
                fitness = metrics.get("AP", 0.0)
                if fitness > self.best_fitness:
                    self.best_fitness = fitness
                    best = self._state(epoch + 1, 0, full=False)
                    if self.ema is not None:
                        best.pop("model")  # best.pt = EMA weights only
                    save_checkpoint(best, self.run_dir / "best.pt")
            self.save_last(epoch + 1, 0)
            if not (self.run_dir / "best.pt").exists():
                # no evaluation yet: best.pt is the latest EMA, so the file always exists
                best = self._state(epoch + 1, 0, full=False)
                if self.ema is not None:
                    best.pop("model")
                save_checkpoint(best, self.run_dir / "best.pt")
        dist_utils.barrier()

    # ------------------------------------------------------------------ signals
    def _install_signal_handlers(self):
        """SIGTERM/SIGINT: finish the current step, write last.pt, stop (SIGKILL cannot be caught:
        use ``train.checkpoint_interval`` for that)."""
        def handler(signum, frame):
            if self.stop_signal is not None:
                raise KeyboardInterrupt
            self.stop_signal = signum
            LOGGER.warning("signal %d: saving last.pt after this step, then stopping", signum)

        old = {}
        try:
            for s in (signal.SIGTERM, signal.SIGINT):
                old[s] = signal.signal(s, handler)
        except ValueError:  # not the main thread
            pass
        return old

    @staticmethod
    def _restore_signal_handlers(old) -> None:
        for s, h in old.items():
            signal.signal(s, h)


def load_detector_weights(model: nn.Module, path) -> nn.Module:
    """Fine-tune start: weights of a detector checkpoint; a head made for another number of
    classes (shape mismatch under ``head.``) keeps its fresh initialisation, with a warning."""
    state = dict(model_state(load_checkpoint(path)))
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    own = model.state_dict()
    reinit = [k for k, v in state.items() if k in own and k.startswith("head.")
              and tuple(v.shape) != tuple(own[k].shape)]
    if reinit:
        LOGGER.warning("%s: %d head tensors have another shape (another number of classes?); "
                       "the head's output layers are re-initialised", path, len(reinit))
        for k in reinit:
            state[k] = own[k]
    load_state_strict(model, state, what=f"weights {path}")
    if dist_utils.is_main_process():
        LOGGER.info("weights loaded from %s", path)
    return model
