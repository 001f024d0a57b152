"""The training engine every task shares: :class:`BaseTrainer` (YOLOX-style small steps).

A task (detection :class:`detector.engine.trainer.Trainer`, classification
:class:`detector.classification.trainer.ClsTrainer`) subclasses it and supplies only what is its
own, through hooks: ``parse_config``, ``setup_data``, ``build_model``, ``preprocess``,
``compute_loss``, ``evaluate_model``, ``resolved_config`` and a few class attributes (loss keys,
fitness key, CSV columns). The engine owns the rest, so every task resumes, stops and steps
the same way. The loop, in one screen::

    before_train()                        runtime, run folder, data, model, optimization, resume
    for epoch in range(start, epochs):
        before_epoch()                    sampler epoch (+ resume position), meters, bar
        for i, batch in loader:
            train_one_step(i, batch)      forward/backward; every `accumulate` batches:
                                          after_window(i): optimizer_step(), lr, EMA, stop, save
        after_epoch()                     reduce losses, evaluate_and_save()
    after_train()

Everything a run needs to continue is in ``last.pt`` (written atomically, plain data for
``torch.load(weights_only=True)``): a resumed run starts at the same epoch *and* batch, with
the same weights, EMA, optimizer, lr step, AMP scaler and RNG streams; the samplers make an
epoch's data a function of ``(seed, epoch, rank, position)``, so the resumed epoch starts at
its batch without loading the ones before it (:mod:`detector.data.sampler`).
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

import torch
from torch import nn

from ..common import ensure_writable_dir
from ..config import ConfigError, save_config
from . import distributed as dist_utils
from .checkpoint import CheckpointError, load_checkpoint, load_state_strict, save_checkpoint
from .ema import ModelEMA, unwrap
from .logger import CSV_COLUMNS, PLOTTED, RunLogger, log_to_file, remove_log_file
from .optim import WarmupScheduler, build_optimizer
from .runtime import (agree_run_dir, compile_for_training, cpu_has_native_bf16, rng_state,
                      set_rng_state, setup_process)

LOGGER = logging.getLogger("cspdet.train")


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps with a NaN/inf loss or gradient: the run cannot go on."""


class StopRequested(Exception):
    """SIGTERM/SIGINT: ``last.pt`` was written at the current batch; resume from it.

    ``checkpoint``: that file, for the caller to name (the CLI words how to resume)."""

    def __init__(self, message: str, checkpoint: Optional[Path] = None):
        super().__init__(message)
        self.checkpoint = checkpoint


class BaseTrainer:
    """Loop, optimizer step, EMA, checkpoints, resume, signals and logging of one run.

    ``cfg``: whatever the task's :meth:`parse_config` reads (a run config, a YAML path or a
    dict, with ``overrides`` on top). ``resume``: path of a ``last.pt``; the run continues in
    that file's folder with the config stored in it (``overrides`` still apply).
    """
    #: the loss parts summed over an epoch, logged as ``train/<key>``
    LOSS_KEYS = ("loss",)
    #: the metric that decides ``best.pt``
    FITNESS_KEY = ""
    #: results.csv columns and the curves plotted (the logger's defaults are the detector's)
    CSV_COLUMNS = CSV_COLUMNS
    PLOTTED = PLOTTED
    #: said after "resume needs a last.pt" when a checkpoint holds no training state
    RESUME_HINT = ""

    def __init__(self, cfg=None, overrides=(), resume: Optional[str] = None, progress: bool = True):
        self.resume_ckpt = None
        self.run_dir_hint = None
        if resume:
            self.resume_ckpt = load_checkpoint(resume)
            if "optimizer" not in self.resume_ckpt:
                raise CheckpointError(f"{resume} holds no training state (optimizer, epoch); "
                                      f"resume needs a last.pt{self.RESUME_HINT}")
            cfg = self.resume_ckpt["config"]
            self.run_dir_hint = Path(resume).resolve().parent
        elif cfg is None:
            raise ConfigError("a training config or a checkpoint to resume is needed")
        self.cfg = self.parse_config(cfg, overrides)
        self.progress = progress
        self.stop_signal: Optional[int] = None
        self.logger: Optional[RunLogger] = None
        self._log_handler: Optional[logging.Handler] = None
        self._signal_handlers: dict = {}

    # ================================================================== task hooks
    def parse_config(self, cfg, overrides):
        """The task's validated run config (with ``.train`` and ``.to_dict()``)."""
        raise NotImplementedError

    def setup_data(self) -> None:
        """Set ``names``, ``train_set``, ``train_loader`` (a resumable sampler) and, on rank 0,
        ``val_set`` / ``val_loader``."""
        raise NotImplementedError

    def build_model(self) -> nn.Module:
        """The model on the CPU (initial weights loaded), and the task's loss."""
        raise NotImplementedError

    def preprocess(self, i: int, batch):
        """Batch ``i`` -> ``(inputs, targets)`` on the device, inputs as the model takes them."""
        raise NotImplementedError

    def compute_loss(self, outputs, targets):
        """``(loss, parts)``: the scalar to back-propagate and a value per :attr:`LOSS_KEYS`."""
        raise NotImplementedError

    def evaluate_model(self, net: nn.Module) -> Dict[str, float]:
        """Metrics of ``net`` on the val split (rank 0 only), logged in one line."""
        raise NotImplementedError

    @property
    def resolved_config(self) -> dict:
        """The config as run, stored in ``config.yaml`` and in every checkpoint."""
        raise NotImplementedError

    @property
    def eval_interval(self) -> int:
        """Evaluate every N epochs (and always after the last; 0 = only after the last)."""
        raise NotImplementedError

    def accumulation(self) -> int:
        """Batches per optimizer step (gradient accumulation); 1 unless the task says more."""
        return 1

    def checkpoint_extras(self, full: bool) -> dict:
        """Task keys added to each checkpoint (``full``: a ``last.pt`` with training state)."""
        return {}

    def progress_fields(self, inputs: torch.Tensor, means: Dict[str, float]) -> dict:
        """What the progress bar shows before images/s and lr."""
        return {k: f"{v:.4f}" for k, v in means.items()}

    def log_run_summary(self) -> None:
        """One line in ``train.log`` saying what this run trains on what."""

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
        tc = self.cfg.train
        self.device, self.distributed, self.rank, self.world = setup_process(tc)
        self.main = self.rank == 0
        # rank 0 names the folder (``name``, ``name2`` ...), the other ranks follow
        self.run_dir = agree_run_dir(tc.save_dir, tc.name, tc.exist_ok, self.run_dir_hint)
        self.setup_data()
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
        if self.start_epoch >= tc.epochs:
            LOGGER.info("nothing to do: the checkpoint already finished %d epochs", tc.epochs)

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

    def _setup_model(self) -> None:
        """The task's model on the device; SyncBatchNorm and DDP when distributed."""
        model = self.build_model()
        model.to(self.device)
        if self.distributed and self.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif self.distributed and self.main:
            LOGGER.info("SyncBatchNorm needs CUDA; on CPU each process keeps its own BN statistics")
        self.model = self.ddp_model = model
        if self.distributed:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        # what the step calls: the (DDP) model, or its torch.compile form (same parameters, so the
        # optimizer, EMA, checkpoints and evaluation keep using ``self.model`` unchanged)
        self.forward_model = compile_for_training(self.ddp_model, self.device) if self.cfg.train.compile \
            else self.ddp_model

    def _setup_optimization(self) -> None:
        """Accumulation, optimizer, warm-up + schedule, EMA, AMP."""
        tc = self.cfg.train
        self.batches_per_epoch = len(self.train_loader)
        self.accumulate = self.accumulation()
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / self.accumulate)
        self.total_steps = self.steps_per_epoch * tc.epochs
        self.warmup_steps = 0
        if tc.warmup_epochs > 0:
            self.warmup_steps = max(round(tc.warmup_epochs * self.steps_per_epoch), tc.warmup_min_iters)
            self.warmup_steps = min(self.warmup_steps, self.total_steps // 2)
        self.optimizer = build_optimizer(self.model, tc)
        self.scheduler = WarmupScheduler(self.optimizer, tc, self.total_steps, self.warmup_steps)
        self.ema = ModelEMA(self.model, tc.ema_decay, tc.ema_tau) if tc.ema else None
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def _amp_dtype(self) -> Optional[torch.dtype]:
        """``train.amp`` on CUDA; bf16 on CPU only where the config has ``cpu_amp`` set."""
        tc = self.cfg.train
        if tc.amp == "off":
            return None
        if self.device.type == "cuda":
            return torch.bfloat16 if tc.amp == "bf16" else torch.float16
        if tc.amp == "bf16" and tc.cpu_amp == "auto":
            native = cpu_has_native_bf16()
            if self.main:
                LOGGER.info("train.cpu_amp=auto: %s", "bf16 autocast (the CPU has native bf16)"
                            if native else "float32 (no native bf16 on this CPU)")
            return torch.bfloat16 if native else None
        if tc.amp == "bf16" and tc.cpu_amp:
            return torch.bfloat16
        if self.main:
            has_cpu_amp = any(f.name == "cpu_amp" for f in dataclasses.fields(tc))
            LOGGER.info("train.amp=%s applies to CUDA only%s; training in float32 on %s", tc.amp,
                        " (bf16 on CPU with train.cpu_amp=true)" if has_cpu_amp else "", self.device)
        return None

    def _setup_run_files(self) -> None:
        """Rank 0: the run folder, ``train.log``, ``config.yaml``, the results logger."""
        tc = self.cfg.train
        ensure_writable_dir(self.run_dir, "run")
        self._log_handler = log_to_file(self.run_dir / "train.log")
        self.logger = RunLogger(self.run_dir, tensorboard=tc.tensorboard, plots=tc.plots,
                                columns=self.CSV_COLUMNS, plotted=self.PLOTTED)
        self.logger.keep_epochs_before(self.start_epoch + (1 if self.start_batch else 0))
        save_config(self.resolved_config, self.run_dir / "config.yaml")
        self.log_run_summary()

    # ================================================================== epoch
    def before_epoch(self) -> None:
        """The sampler at (epoch, resume position), fresh meters, the progress bar."""
        epoch, tc = self.epoch, self.cfg.train
        self.epoch_start_batch = self.start_batch if epoch == self.start_epoch else 0
        # a resumed epoch starts at its batch: the samples before it are never loaded
        self.train_loader.sampler.set_epoch(epoch, start=self.epoch_start_batch * tc.batch_size)
        self.model.train()
        self.loss_sums = dict.fromkeys(self.LOSS_KEYS, 0.0)
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
        """Mean losses over ranks; evaluation when due; the epoch's row and checkpoints."""
        if self.bar is not None:
            self.bar.close()
        means = {k: torch.tensor(v / max(self.good_batches, 1)) for k, v in self.loss_sums.items()}
        losses = {k: float(v) for k, v in dist_utils.all_reduce_dict(means).items()}
        epoch_time = time.time() - self.epoch_t0
        interval = self.eval_interval
        due = self.final_epoch or (interval > 0 and (self.epoch + 1) % interval == 0)
        self.evaluate_and_save(losses, epoch_time, evaluate=due)

    @property
    def final_epoch(self) -> bool:
        """The epoch is the schedule's last: its evaluation (always run) is the final one."""
        return self.epoch + 1 == self.cfg.train.epochs

    # ================================================================== step
    def train_one_step(self, i: int, batch) -> None:
        """Forward and backward of batch ``i``; the optimizer steps when it closes a window of
        ``accumulate`` batches (DDP all-reduces gradients only then)."""
        acc, nb = self.accumulate, self.batches_per_epoch
        window_start = (i // acc) * acc
        window = min(acc, nb - window_start)
        closes_window = i == window_start + window - 1
        inputs, targets = self.preprocess(i, batch)
        no_sync = self.distributed and not closes_window
        with self.ddp_model.no_sync() if no_sync else contextlib.nullcontext():
            with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                enabled=self.amp_dtype is not None):
                outputs = self.forward_model(inputs)
            loss, parts = self.compute_loss(outputs, targets)
            # every rank must agree before backward, or DDP's gradient all-reduce hangs
            bad = dist_utils.any_rank(not bool(torch.isfinite(loss).item()), self.device)
            if not bad:
                self.scaler.scale(loss / window).backward()
        self.window_bad |= bad
        if not bad:
            for k in self.LOSS_KEYS:
                self.loss_sums[k] += float(parts[k])
            self.good_batches += 1
        self.images_done += len(inputs)
        if closes_window:
            self.after_window(i)
        self._update_bar(inputs)

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
            raise StopRequested(f"stopped by signal at epoch {self.epoch + 1}, batch {i + 1}",
                                self.run_dir / "last.pt")
        if self.mid_epoch_save_due(i):
            self.save_last(self.epoch, i + 1)

    def mid_epoch_save_due(self, i: int) -> bool:
        """``last.pt`` every ``checkpoint_interval`` optimizer steps (not at an epoch's end,
        which writes it anyway)."""
        interval = self.cfg.train.checkpoint_interval
        return bool(interval) and self.scheduler.last_step % interval == 0 and i + 1 < self.batches_per_epoch

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

    def _update_bar(self, inputs: torch.Tensor) -> None:
        if self.bar is None:
            return
        means = {k: v / max(self.good_batches, 1) for k, v in self.loss_sums.items()}
        rate = self.images_done * self.world / max(time.time() - self.epoch_t0, 1e-9)
        self.bar.set_postfix(**self.progress_fields(inputs, means), img_s=f"{rate:.1f}",
                             lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
        self.bar.update(1)

    # ================================================================== evaluation, checkpoints
    @torch.no_grad()
    def evaluate(self) -> Dict[str, float]:
        """The task's metrics of the EMA (else raw) model, on rank 0."""
        metrics: Dict[str, float] = {}
        if self.main:
            metrics = self.evaluate_model(self.ema.module if self.ema is not None else unwrap(self.model))
        dist_utils.barrier()
        return metrics

    def evaluate_and_save(self, losses: Dict[str, float], epoch_time: float, evaluate: bool) -> None:
        """Evaluate when due, log the epoch's row; rank 0 writes best.pt (when the fitness
        improved, or while there is none yet) and last.pt (resume at the next epoch)."""
        metrics = self.evaluate() if evaluate else {}
        if metrics:
            self.last_metrics = metrics
        improved = False
        if self.main:
            epoch = self.epoch
            lr = self.optimizer.param_groups[0]["lr"]
            images = self.images_done * self.world
            self.logger.log_epoch({"epoch": epoch + 1, "lr": lr, "bad_steps": self.bad_steps_total,
                                   "epoch_time_s": epoch_time, "images_per_s": images / max(epoch_time, 1e-9),
                                   **{f"train/{k}": v for k, v in losses.items()}, **metrics})
            improved = bool(metrics) and metrics.get(self.FITNESS_KEY, 0.0) > self.best_fitness
            if improved:
                self.best_fitness = metrics.get(self.FITNESS_KEY, 0.0)
        self.save_last(self.epoch + 1, 0)  # collective: every rank's RNG goes into it
        if self.main and (improved or not (self.run_dir / "best.pt").exists()):
            # no evaluation yet: best.pt is the latest EMA, so the file always exists
            self.save_best(self.epoch + 1)
        dist_utils.barrier()

    def _state(self, epoch: int, batch: int, full: bool = True, rng_ranks: Optional[list] = None) -> dict:
        """Checkpoint dict; ``epoch``/``batch`` = where a resumed run starts; ``rng_ranks`` =
        every rank's RNG state (rank order), so a resume with as many processes restores each."""
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
            rng_ranks = rng_ranks or [rng_state()]
            state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                         scaler=self.scaler.state_dict(), rng=rng_ranks[0], rng_ranks=rng_ranks,
                         bad_steps_total=self.bad_steps_total, world_size=self.world)
        state.update(self.checkpoint_extras(full))
        return state

    def save_last(self, epoch: int, batch: int) -> None:
        """Collective under DDP (every rank calls it): each rank hands rank 0 its RNG state,
        which rank 0 writes into ``last.pt`` with the rest."""
        rng_ranks = dist_utils.gather_objects(rng_state())
        if self.main:
            save_checkpoint(self._state(epoch, batch, rng_ranks=rng_ranks), self.run_dir / "last.pt")

    def save_best(self, epoch: int) -> None:
        best = self._state(epoch, 0, full=False)
        if self.ema is not None:
            best.pop("model")  # best.pt = EMA weights only
        save_checkpoint(best, self.run_dir / "best.pt")

    def _restore(self, ckpt: dict) -> None:
        """Weights, EMA, optimizer, schedule, scaler, RNG and position from a ``last.pt``."""
        load_state_strict(unwrap(self.model), ckpt["model"], what="resume checkpoint")
        tc = self.cfg.train
        if self.ema is not None:
            if "ema" in ckpt:
                self.ema.load_state_dict(ckpt["ema"], ckpt.get("ema_updates", 0))
            else:  # trained without EMA so far: it starts from the resumed weights
                self.ema = ModelEMA(self.model, tc.ema_decay, tc.ema_tau)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if "rng" in ckpt and ckpt.get("world_size", 1) == self.world:
            # each rank its own stream; checkpoints older than rng_ranks hold rank 0's only
            ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
            set_rng_state(ranks[dist_utils.rank()] if dist_utils.rank() < len(ranks) else ckpt["rng"])
        self.start_epoch, self.start_batch = int(ckpt["epoch"]), int(ckpt.get("batch", 0))
        self.best_fitness = float(ckpt.get("best_fitness", -1.0))
        self.bad_steps_total = int(ckpt.get("bad_steps_total", 0))
        self.last_metrics = dict(ckpt.get("metrics") or {})
        if self.batch_layout_changed(ckpt):
            if self.start_batch:
                self.start_epoch, self.start_batch = self.resume_after_layout_change(ckpt)
            # the lr schedule counts optimizer steps, and their number per epoch changed with the
            # layout (e.g. 2 nodes -> 1 doubles it): restart it at this epoch's first step
            self.scheduler.load_state_dict({"last_step": self.start_epoch * self.steps_per_epoch})
        if self.start_batch >= self.batches_per_epoch:
            self.start_epoch, self.start_batch = self.start_epoch + 1, 0
        if self.main:
            LOGGER.info("resuming at epoch %d, batch %d (of %d)", self.start_epoch + 1,
                        self.start_batch, self.batches_per_epoch)

    def batch_layout_changed(self, ckpt: dict) -> bool:
        """Another number of processes or another accumulation: a batch index then names
        other samples (another partition) or another window."""
        return (ckpt.get("world_size", 1) != self.world
                or ckpt.get("accumulate", self.accumulate) != self.accumulate)

    def resume_after_layout_change(self, ckpt: dict):
        """Where a mid-epoch checkpoint resumes when :meth:`batch_layout_changed`: the start of
        the next epoch (the rest of the interrupted one is not trained on)."""
        LOGGER.warning("processes (%s -> %d) or gradient accumulation (%s -> %d) changed; "
                       "resuming at the next epoch", ckpt.get("world_size", 1), self.world,
                       ckpt.get("accumulate"), self.accumulate)
        return self.start_epoch + 1, 0

    # ================================================================== signals
    def _install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: finish the current step, write last.pt, stop (SIGKILL cannot be caught:
        use ``train.checkpoint_interval`` for that). A second signal interrupts at once."""
        def handler(signum, frame):
            if self.stop_signal is not None:
                raise KeyboardInterrupt
            self.stop_signal = signum
            LOGGER.warning("signal %d: saving last.pt after this step, then stopping", signum)

        with contextlib.suppress(ValueError):  # not the main thread
            for s in (signal.SIGTERM, signal.SIGINT):
                self._signal_handlers[s] = signal.signal(s, handler)
