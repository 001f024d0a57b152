"""Engine pieces on their own: config schema, param groups, lr schedule, EMA, RNG state, logging."""
import csv
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from detector.config import ConfigError
from detector.engine.checkpoint import load_checkpoint, save_checkpoint
from detector.engine.ema import ModelEMA
from detector.engine.logger import RunLogger
from detector.engine.optim import WarmupScheduler, build_optimizer, param_groups
from detector.engine.train_config import TrainConfig, parse_run_config
from detector.engine.runtime import rng_state, set_rng_state

MINIMAL = {"model": {"neck": {"type": "efm"}}, "data": "configs/data/shapes.yaml",
           "train": {"name": "x", "epochs": 2, "batch_size": 2, "img_size": 64},
           "eval": {"img_size": 64, "conf_thres": 0.001, "iou_thres": 0.6, "max_det": 100, "interval": 1}}


def small_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


# ---------------------------------------------------------------- config
def test_config_keeps_the_detector_engineers_keys_and_fills_defaults():
    cfg = parse_run_config(MINIMAL, ["train.lr=2e-3", "train.multi_scale=[0.5, 1.5]"])
    assert cfg.train.epochs == 2 and cfg.train.lr == pytest.approx(2e-3)
    assert cfg.train.multi_scale == (0.5, 1.5)
    assert cfg.train.augment.mosaic == 1.0  # AugmentConfig defaults
    assert cfg.eval.max_det == 100 and cfg.weights is None
    assert cfg.to_dict()["train"]["multi_scale"] == [0.5, 1.5]


@pytest.mark.parametrize("override,named,hint", [
    ("train.lr0=0.1", "train.lr0", "lr"),
    ("train.augment.mosiac=0.5", "train.augment.mosiac", "mosaic"),
    ("eval.conf_thresh=0.1", "eval.conf_thresh", "conf_thres"),
])
def test_config_typo_names_the_key_and_suggests(override, named, hint):
    with pytest.raises(ConfigError) as e:
        parse_run_config(MINIMAL, [override])
    assert f"'{named}'" in str(e.value) and f"did you mean '{hint}'" in str(e.value)


def test_unknown_top_level_section_is_refused():
    bad = dict(MINIMAL, trian={"epochs": 1})
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        parse_run_config(bad)


@pytest.mark.parametrize("override", ["train.amp=fp32", "train.optimizer=adam", "train.img_size=100",
                                      "train.milestones=[0.9, 0.8]", "train.multi_scale=[1.5, 0.5]"])
def test_config_bad_values_fail(override):
    with pytest.raises(ConfigError):
        parse_run_config(MINIMAL, [override])


# ---------------------------------------------------------------- optimizer and schedule
def test_no_weight_decay_on_norm_and_bias():
    net = small_net()
    groups = {g["name"]: g for g in param_groups(net, 5e-4)}
    ids = lambda g: {id(p) for p in g["params"]}  # noqa: E731
    assert ids(groups["decay"]) == {id(net[0].weight), id(net[2].weight)}
    assert ids(groups["no_decay"]) == {id(net[1].weight)}
    assert ids(groups["bias"]) == {id(net[1].bias), id(net[2].bias)}
    assert groups["decay"]["weight_decay"] == 5e-4
    assert groups["no_decay"]["weight_decay"] == groups["bias"]["weight_decay"] == 0.0
    opt = build_optimizer(net, TrainConfig(optimizer="adamw", weight_decay=0.05))
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[1]["weight_decay"] == 0.0


def lrs(cfg, total, warmup, steps):
    opt = build_optimizer(small_net(), cfg)
    sched = WarmupScheduler(opt, cfg, total, warmup)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        sched.step()
    return out, opt, sched


def test_warmup_then_cosine():
    cfg = TrainConfig(optimizer="sgd", lr=0.1, min_lr_ratio=0.05, momentum=0.9, warmup_momentum=0.5)
    lr, opt, _ = lrs(cfg, total=100, warmup=10, steps=101)
    assert lr[0] == 0.0 and lr[5] == pytest.approx(0.05 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 0.05))))
    assert lr[10] == pytest.approx(0.1 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 0.1))))
    assert lr[50] == pytest.approx(0.1 * (0.05 + 0.95 * 0.5))
    assert lr[100] == pytest.approx(0.005)
    assert all(a >= b for a, b in zip(lr[10:], lr[11:]))  # monotone after warm-up
    assert opt.param_groups[0]["momentum"] == 0.9


def test_step_schedule_is_the_papers_400k_450k_of_500k():
    cfg = TrainConfig(lr=1.0, scheduler="step", milestones=(0.8, 0.9), gamma=0.1)
    lr, _, _ = lrs(cfg, total=500, warmup=0, steps=500)
    assert lr[399] == 1.0 and lr[400] == pytest.approx(0.1)
    assert lr[449] == pytest.approx(0.1) and lr[450] == pytest.approx(0.01)


def test_scheduler_state_resumes_at_the_same_lr():
    cfg = TrainConfig(lr=0.1)
    _, opt, sched = lrs(cfg, total=100, warmup=10, steps=37)
    opt2 = build_optimizer(small_net(), cfg)
    sched2 = WarmupScheduler(opt2, cfg, 100, 10)
    sched2.load_state_dict(sched.state_dict())
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


# ---------------------------------------------------------------- EMA
def test_ema_ramps_up_and_follows_the_model():
    net = small_net()
    ema = ModelEMA(net, decay=0.9, tau=1.0)
    with torch.no_grad():
        net[0].weight.add_(1.0)
        net[1].running_mean.fill_(3.0)
    before = ema.module[0].weight.clone()
    ema.update(net)
    d = 0.9 * (1 - math.exp(-1))
    assert torch.allclose(ema.module[0].weight, d * before + (1 - d) * net[0].weight)
    assert torch.equal(ema.module[1].num_batches_tracked, net[1].num_batches_tracked)
    assert not any(p.requires_grad for p in ema.module.parameters())
    for _ in range(200):
        ema.update(net)
    assert torch.allclose(ema.module[0].weight, net[0].weight, atol=1e-6)


# ---------------------------------------------------------------- RNG state
def test_rng_state_roundtrips_through_a_weights_only_checkpoint(tmp_path):
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    path = save_checkpoint({"rng": rng_state()}, tmp_path / "r.pt")
    expected = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_state(load_checkpoint(path)["rng"])  # load_checkpoint uses weights_only=True
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


# ---------------------------------------------------------------- logging
def test_logger_writes_csv_png_tensorboard_and_drops_rows_on_resume(tmp_path):
    log = RunLogger(tmp_path, tensorboard=True, plots=True)
    for e in (1, 2, 3):
        log.log_epoch({"epoch": e, "train/box": 0.1 / e, "lr": 0.01, "AP": 0.1 * e})
    log.close()
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert {"AP", "AP50", "AP75", "lr", "train/box", "epoch_time_s"} <= set(rows[0])
    assert rows[0]["AP50"] == ""  # not evaluated: empty, not a made-up number
    assert (tmp_path / "results.png").stat().st_size > 1000
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    again = RunLogger(tmp_path, tensorboard=False)
    again.keep_epochs_before(3)  # resumed inside epoch 3: its row will be written again
    again.log_epoch({"epoch": 3, "AP": 0.5})
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [(r["epoch"], r["AP"]) for r in rows] == [("1", "0.1"), ("2", "0.2"), ("3", "0.5")]
