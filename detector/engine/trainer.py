"""Detection training: :class:`Trainer`, the engine (:class:`~.base_trainer.BaseTrainer`) with
a detector's data, model, loss and COCO evaluation.

``Trainer(cfg).train()`` builds the data, model, loss, optimizer, schedule and EMA from a
:class:`RunConfig`, then trains in ``runs/<name>/``; the loop, checkpoints, exact resume,
signals and the optimizer step are the engine's (its module docstring draws the loop). What
detection adds: gradient accumulation to ``nominal_batch_size``, multi-scale batches, mosaic off
for the last ``close_mosaic`` epochs, fine-tuning from ``weights`` and the ``CSPDET_BATCH_LOG``
debugging aid.

The data of an epoch (order, augmentation, multi-scale size) is a function of ``(seed, epoch,
rank, position)`` only (:mod:`detector.data.sampler`), so a resumed epoch starts at its batch
without loading the ones before it and sees the same samples as an uninterrupted run, with any
number of data workers. See docs/training.md for what stays exact when a resumed run changes
the number of processes or the accumulation.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import zlib
from typing import Dict, Optional

import numpy as np
import torch

from ..config import ConfigError, PathOrDict, to_dict
from ..models.heads import AUTO_ANCHORS, HeadConfig
from ..models.state_dict import CONF_KEY, stored_conf
from . import distributed as dist_utils
from .base_trainer import BaseTrainer, NonFiniteLossError, StopRequested
from .checkpoint import load_detector_weights
from .train_config import RunConfig, parse_run_config

LOGGER = logging.getLogger("cspdet.train")
LOSS_KEYS = ("box", "obj", "cls", "total")
#: a debugging aid: when set, each rank appends one JSON line per batch it trains on
#: (epoch, batch, image ids, a CRC of the images and targets) to this file (``.rank<r>`` added
#: for ranks > 0), e.g. to compare a resumed run's batches with an uninterrupted run's
BATCH_LOG_ENV = "CSPDET_BATCH_LOG"

__all__ = ["Trainer", "StopRequested", "NonFiniteLossError", "BATCH_LOG_ENV"]


class Trainer(BaseTrainer):
    """Trains a detector from a :class:`RunConfig` (or a path / dict + overrides).

    ``resume``: path of a ``last.pt``; the run continues in that file's folder with the
    config stored in it (``overrides`` may still change e.g. ``train.epochs``).
    """
    LOSS_KEYS = LOSS_KEYS
    FITNESS_KEY = "AP"
    RESUME_HINT = ", use weights=... to fine-tune"

    def __init__(self, cfg: Optional[PathOrDict | RunConfig] = None, overrides=(),
                 resume: Optional[str] = None, progress: bool = True):
        super().__init__(cfg, overrides, resume, progress)
        self._mosaic_closed = False
        self._batch_log = os.environ.get(BATCH_LOG_ENV) or None
        # the F1-optimal confidence of the latest evaluation: stored in the checkpoints after it
        self.conf_thres_f1 = stored_conf(self.resume_ckpt or {})

    def parse_config(self, cfg, overrides) -> RunConfig:
        return cfg if isinstance(cfg, RunConfig) else parse_run_config(cfg, overrides)

    @property
    def eval_interval(self) -> int:
        return self.cfg.eval.interval

    # ================================================================== data
    def setup_data(self) -> None:
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

    # ================================================================== model
    def build_model(self):
        from ..models.builder import build_model
        from ..models.loss import YOLOLoss
        model = build_model({"model": self._with_anchors(dict(self.cfg.model, num_classes=len(self.names)))})
        self.model_config = model.config
        if self.resume_ckpt is None:
            self._load_initial_weights(model)
        self.criterion = YOLOLoss(model, img_size=self.cfg.train.img_size)
        if self.criterion.cfg.scale_gains and self.main:
            LOGGER.info("loss gains scaled to %d classes at %d px (model.loss.scale_gains): %s",
                        model.num_classes, self.cfg.train.img_size,
                        ", ".join(f"{k} {v:.3g}" for k, v in self.criterion.gains.items()))
        self.stride = max(model.strides)
        return model

    def _with_anchors(self, model_cfg: dict) -> dict:
        """``head.anchors: auto`` -> k-means anchors of the training boxes at the training size
        (deterministic, so every rank and a resumed run compute the same)."""
        head = dict(model_cfg.get("head") or {})
        if head.get("anchors") != AUTO_ANCHORS:
            return model_cfg
        from ..data.anchors import fit_anchors
        levels = len(head.get("strides") or HeadConfig.strides)
        anchors, best_iou, matched, n = fit_anchors(self.train_set.records, self.cfg.train.img_size, levels)
        if self.main:
            LOGGER.info("anchors from the training boxes (k-means, %d boxes at %d px): %s; mean best "
                        "IoU %.3f, %.1f%% of boxes matched", n, self.cfg.train.img_size, anchors,
                        best_iou, 100 * matched)
        return dict(model_cfg, head=dict(head, anchors=anchors))

    def _load_initial_weights(self, model) -> None:
        """``model.backbone_weights`` (ImageNet) then ``weights`` (a detector checkpoint)."""
        if getattr(model, "backbone_weights", None):
            from ..models import load_pretrained_backbone
            load_pretrained_backbone(model.backbone, model.backbone_weights)
            if dist_utils.is_main_process():
                LOGGER.info("backbone initialised from %s", model.backbone_weights)
        if self.cfg.weights:
            load_detector_weights(model, self.cfg.weights)

    def accumulation(self) -> int:
        """Batches per optimizer step: ``nominal_batch_size`` over all processes' batches."""
        tc = self.cfg.train
        per_step = tc.batch_size * self.world
        return max(1, round(tc.nominal_batch_size / per_step)) if tc.nominal_batch_size else 1

    def checkpoint_extras(self, full: bool) -> dict:
        extras = {"accumulate": self.accumulate} if full else {}
        if self.conf_thres_f1 is not None:  # inference's default threshold (detector.inference.confidence)
            extras[CONF_KEY] = self.conf_thres_f1
        return extras

    @property
    def resolved_config(self) -> dict:
        """The config as run: the model's full config and the resolved data section."""
        out = self.cfg.to_dict()
        out["model"] = to_dict(self.model_config)
        out["data"] = to_dict(dataclasses.asdict(self.data_cfg))
        return out

    def log_run_summary(self) -> None:
        tc = self.cfg.train
        LOGGER.info("run folder %s | %s (%d threads) | %d train images, %d classes | batch %d x %d "
                    "process(es), accumulate %d | %d steps (%d warm-up)", self.run_dir, self.device,
                    torch.get_num_threads(), len(self.train_set), len(self.names), tc.batch_size,
                    self.world, self.accumulate, self.total_steps, self.warmup_steps)

    # ================================================================== epoch
    def before_epoch(self) -> None:
        """Mosaic off near the end, then the engine's epoch start."""
        self._maybe_close_mosaic(self.epoch)
        super().before_epoch()
        self.train_loader.epoch = self.epoch  # the loader's pass number, named in its skip reports

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
    def preprocess(self, i: int, batch: dict):
        """Images in [0, 1] and targets on the device; with ``multi_scale`` resized to a size
        that is a function of ``(seed, epoch, batch)``, the same on every rank."""
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
        return images.float() / 255.0, targets

    def compute_loss(self, outputs, targets):
        loss, parts = self.criterion([r.float() for r in outputs], targets)
        return loss, {"box": parts["box"], "obj": parts["obj"], "cls": parts["cls"],
                      "total": loss.detach()}

    def progress_fields(self, inputs, means: Dict[str, float]) -> dict:
        return {"box": f"{means['box']:.4f}", "obj": f"{means['obj']:.4f}",
                "cls": f"{means['cls']:.4f}", "size": inputs.shape[-1]}

    def _log_batch(self, i: int, batch: dict, images: torch.Tensor, targets) -> None:
        crc = zlib.crc32(images.cpu().contiguous().numpy().tobytes())
        for t in targets:
            crc = zlib.crc32(t.cpu().contiguous().numpy().tobytes(), crc)
        path = self._batch_log + (f".rank{self.rank}" if self.rank else "")
        with open(path, "a") as f:
            f.write(json.dumps({"epoch": self.epoch, "batch": i, "size": int(images.shape[-1]),
                                "ids": [m["image_id"] for m in batch["meta"]], "crc": crc}) + "\n")

    # ================================================================== evaluation
    def evaluate_model(self, net) -> Dict[str, float]:
        """COCO metrics of ``net`` on the val split; keeps its F1-optimal confidence for the
        checkpoints, and the final evaluation writes its figures into the run folder."""
        from ..evaluation import COCOEvaluator, evaluate
        from ..evaluation.curves import confidence_curves
        ec, ds = self.cfg.eval, self.val_set
        evaluator = COCOEvaluator(ds.coco_gt(), ds.label_to_cat_id, ds.names)
        result = evaluate(net, self.val_loader, conf_thres=ec.conf_thres, iou_thres=ec.iou_thres,
                          max_det=ec.max_det, device=self.device, progress=self.progress,
                          evaluator=evaluator)
        self.conf_thres_f1 = confidence_curves(evaluator).best_conf()[0]
        if self.final_epoch and self.cfg.train.plots:
            self._write_eval_report(evaluator)
        metrics = {k: float(result[k]) for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")
                   if k in result}
        LOGGER.info("eval: AP %.4f | AP50 %.4f | AP75 %.4f", metrics.get("AP", float("nan")),
                    metrics.get("AP50", float("nan")), metrics.get("AP75", float("nan")))
        return metrics

    def _write_eval_report(self, evaluator) -> None:
        """The final evaluation's figures (docs/evaluation.md) in the run folder, and its
        per-class precision / recall / F1 at the F1-optimal confidence in the log."""
        from ..evaluation.report import describe_conf, format_pr_table, write_eval_report
        report = write_eval_report(evaluator, self.val_set, self.run_dir)
        LOGGER.info("val precision / recall / F1 at %s (saved as %s in last.pt, and in best.pt when "
                    "this epoch is its best)\n%s\nevaluation figures in %s", describe_conf(report), CONF_KEY,
                    format_pr_table(report["per_class"]), self.run_dir)
