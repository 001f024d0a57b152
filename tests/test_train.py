"""End-to-end training on tiny synthetic data: run files, exact resume after SIGKILL and after
SIGTERM to the process group (with data workers), typos, NaN guard.

The data is 16 train / 8 val shapes images at 64 px made in a tmp folder; the model is a small
CSP backbone with the EFM(SAM) neck and YOLO head, so every test trains for real in seconds.
"""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from detector.engine.checkpoint import load_checkpoint, load_detector_weights, model_state
from detector.engine.trainer import NonFiniteLossError, Trainer
from detector.models.builder import build_model

from conftest import REPO, TINY_MODEL, tiny_config


def run_cli(args, cwd, env_extra=None, wait=True, batch_log=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.update(env_extra or {})
    if batch_log:
        env["CSPDET_BATCH_LOG"] = str(batch_log)
    cmd = [sys.executable, str(REPO / "tools" / "train.py"), "--no-progress", *args]
    if not wait:  # its own process group, as a shell job or a scheduler's job has
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def read_batch_log(path):
    """{(epoch, batch): (image ids, size, crc of images + targets)} of a CSPDET_BATCH_LOG file."""
    import json
    out = {}
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        out[(r["epoch"], r["batch"])] = (tuple(r["ids"]), r["size"], r["crc"])
    return out


@pytest.fixture(scope="module")
def full_run(tiny_data, tmp_path_factory):
    """An uninterrupted 2-epoch run (8 batches per epoch, 2 data workers, multi-scale) through
    the command line, with its batch log."""
    work = tmp_path_factory.mktemp("full")
    cfg_path = work / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(tiny_data, work / "runs", batch_size=2, workers=2,
                                                   multi_scale=[0.5, 1.5])))
    proc = run_cli(["--cfg", str(cfg_path)], cwd=work, batch_log=work / "batches.jsonl")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work, cfg_path, work / "runs" / "tiny"


def test_two_epoch_run_writes_every_run_file(full_run):
    _, _, run = full_run
    for name in ("config.yaml", "last.pt", "best.pt", "results.csv", "results.png", "train.log",
                 "F1_curve.png", "PR_curve.png", "confusion_matrix.csv", "val_batch0_labels_vs_pred.png"):
        assert (run / name).is_file(), name   # with the final evaluation's figures
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert not list(run.glob("*.tmp"))  # atomic writes leave no temp files
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for r in rows:
        for key in ("train/box", "train/obj", "train/cls", "lr", "AP", "AP50", "AP75", "epoch_time_s"):
            assert r[key] != "", key
    assert "epoch 2: mosaic and mixup off" in (run / "train.log").read_text()  # close_mosaic: 1
    saved = yaml.safe_load(open(run / "config.yaml"))
    assert saved["model"]["num_classes"] == 5 and saved["train"]["epochs"] == 2
    # checkpoints are plain data (weights_only) and self-contained: rebuild the model from them
    for name in ("last.pt", "best.pt"):
        raw = torch.load(run / name, weights_only=True)
        assert raw["names"] == ["circle", "square", "triangle", "star", "cross"]
        from detector import build_model
        model = build_model({"model": raw["config"]["model"]})
        model.load_state_dict(model_state(raw))
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 2 and last["batch"] == 0
    assert {"optimizer", "scheduler", "scaler", "rng", "ema"} <= set(last)
    assert "optimizer" not in load_checkpoint(run / "best.pt")  # best.pt: EMA weights only


def _wait_for(proc, condition, what, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        found = condition()
        if found:
            return found
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"the run ended before {what}: " + proc.stdout.read())


def _assert_same_training_state(a, b):
    """Weights, EMA, lr step and optimizer moments of two last.pt dicts."""
    assert b["epoch"] == a["epoch"] and b["scheduler"] == a["scheduler"]
    for key in ("model", "ema"):
        for k, v in a[key].items():
            torch.testing.assert_close(b[key][k], v, atol=1e-6, rtol=0, msg=f"{key}.{k}")
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for pid, state_a in a["optimizer"]["state"].items():
        for name, value in state_a.items():  # AdamW: step, exp_avg, exp_avg_sq
            torch.testing.assert_close(b["optimizer"]["state"][pid][name], value, atol=1e-6, rtol=0)


def _assert_resumed_batches_match(full_log, first_log, resumed_log, epoch, batch):
    """The resumed run starts at (epoch, batch), never receiving (so never loading) an earlier
    batch, and every batch of both parts is the uninterrupted run's: same images, same order,
    same augmentation and multi-scale size."""
    full, first, resumed = map(read_batch_log, (full_log, first_log, resumed_log))
    assert min(resumed) == (epoch, batch), sorted(resumed)[:3]
    done = {k: v for k, v in first.items() if k < (epoch, batch)}
    assert sorted({**done, **resumed}) == sorted(full)
    for k, v in {**done, **resumed}.items():
        assert v == full[k], (k, v, full[k])
    assert len({v[1] for v in full.values()}) > 1  # multi-scale really changed the size


def test_resume_after_sigkill_mid_epoch_matches_uninterrupted_run(full_run, tmp_path):
    """Kill -9 mid-epoch (mosaic on; checkpoints every step), resume, compare with the full
    run (whose epoch 2 closes mosaic: the resumed run rebuilds its loader there too).

    Both runs use 2 data workers. Every sample's order, augmentation and batch size are keyed on
    (seed, epoch, rank, position), the model/EMA/optimizer/lr step/RNG come back from last.pt,
    and on CPU the same kernels run on the same inputs, so weights must agree to float rounding
    (atol 1e-6; in practice they are bitwise equal).
    """
    work, cfg_path, full = full_run
    save_dir = tmp_path / "runs"
    args = ["--cfg", str(cfg_path), f"train.save_dir={save_dir}", "train.checkpoint_interval=1"]
    log = tmp_path / "first.jsonl"
    proc = run_cli(args, cwd=tmp_path, wait=False, batch_log=log)
    last = save_dir / "tiny" / "last.pt"
    # watch the cheap batch log, not last.pt: loading a checkpoint on a busy machine can take
    # longer than the steps left in the epoch, and the kill then lands in the next one
    _wait_for(proc, lambda: log.is_file() and any((0, 3) <= k for k in read_batch_log(log)),
              "it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ck = load_checkpoint(last)
    assert 0 < ck["batch"] < 8, (ck["epoch"], ck["batch"])  # mid-epoch
    resumed = run_cli(["--resume", str(last)], cwd=tmp_path, batch_log=tmp_path / "resumed.jsonl")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (f"resuming at epoch {ck['epoch'] + 1}, batch {ck['batch']}"
            in resumed.stdout + resumed.stderr)
    _assert_same_training_state(load_checkpoint(full / "last.pt"), load_checkpoint(last))
    _assert_resumed_batches_match(work / "batches.jsonl", log, tmp_path / "resumed.jsonl",
                                  ck["epoch"], ck["batch"])
    rows = list(csv.DictReader(open(save_dir / "tiny" / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]


def test_sigterm_to_the_process_group_writes_last_pt_and_resume_continues(full_run, tmp_path):
    """A scheduler (or Ctrl-C, or `timeout`) signals the whole group, data workers included:
    the trainer finishes its step, writes last.pt at that batch and exits with 130; the
    resumed run ends where the uninterrupted one does."""
    work, cfg_path, full = full_run
    save_dir = tmp_path / "runs"
    log = tmp_path / "first.jsonl"
    proc = run_cli(["--cfg", str(cfg_path), f"train.save_dir={save_dir}"], cwd=tmp_path,
                   wait=False, batch_log=log)
    _wait_for(proc, lambda: log.is_file() and any(
        (1, 2) <= k for k in read_batch_log(log)), "SIGTERM could be sent")
    os.killpg(proc.pid, signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert "resume with --resume" in out
    last = save_dir / "tiny" / "last.pt"
    ck = load_checkpoint(last)
    assert ck["epoch"] == 1 and 2 <= ck["batch"] < 8, (ck["epoch"], ck["batch"])
    resumed = run_cli(["--resume", str(last)], cwd=tmp_path, batch_log=tmp_path / "resumed.jsonl")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    _assert_same_training_state(load_checkpoint(full / "last.pt"), load_checkpoint(last))
    _assert_resumed_batches_match(work / "batches.jsonl", log, tmp_path / "resumed.jsonl",
                                  1, ck["batch"])


def load_cli():
    import detector.cli.train as cli
    return cli


@pytest.mark.parametrize("override,message", [
    ("train.lr0=0.1", "unknown config key 'train.lr0' (did you mean 'lr'?)"),
    ("trian.epochs=3", "no section 'trian' (did you mean 'train'?)"),
    ("model.neck.chanels=[8,8,8]", "'model.neck.chanels' (did you mean 'channels'?)"),
])
def test_config_typo_fails_fast_without_creating_a_run(tiny_data, tmp_path, capsys, override, message):
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(tiny_config(tiny_data, tmp_path / "runs")))
    assert load_cli().main(["--cfg", str(cfg_path), override]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing trained, no half-made run folder


def test_non_finite_losses_stop_the_run_and_keep_the_last_checkpoint(tiny_data, tmp_path, monkeypatch):
    from detector.models import loss as loss_mod
    real = loss_mod.YOLOLoss.forward
    calls = {"n": 0}

    sizes = set()

    def flaky(self, raw, targets):
        calls["n"] += 1
        sizes.add(raw[0].shape[-1] * 8)
        total, parts = real(self, raw, targets)
        if calls["n"] > 4:  # epoch 1 (4 batches) is fine, then every loss is NaN
            total = total * float("nan")
        return total, parts

    monkeypatch.setattr(loss_mod.YOLOLoss, "forward", flaky)
    cfg = tiny_config(tiny_data, tmp_path, epochs=3, max_bad_steps=3, multi_scale=[0.5, 1.5])
    cfg["eval"]["interval"] = 0
    with pytest.raises(NonFiniteLossError, match="3 optimizer steps in a row"):
        Trainer(cfg, progress=False).train()
    ck = load_checkpoint(tmp_path / "tiny" / "last.pt")
    assert ck["epoch"] == 1  # the good epoch-1 checkpoint survives
    assert len(sizes) > 1 and sizes <= {32, 64, 96}  # multi-scale: multiples of 32 in 64 * [0.5, 1.5]
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_fine_tune_from_a_checkpoint_with_other_classes_reinitialises_the_head(full_run, caplog):
    _, _, run = full_run
    from detector import build_model
    model = build_model({"model": dict(TINY_MODEL, num_classes=3)})
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    with caplog.at_level("WARNING"):
        load_detector_weights(model, run / "best.pt")
    assert "re-initialised" in caplog.text
    state = model_state(load_checkpoint(run / "best.pt"))
    own = model.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in own if not k.startswith("head."))
    changed = [k for k in fresh_head if own[k].shape != state[k].shape]
    assert changed and all(torch.equal(own[k], fresh_head[k]) for k in changed)


def test_backbone_weights_are_loaded_before_training(tiny_data, tmp_path):
    from detector import build_model
    from detector.engine.checkpoint import save_checkpoint
    donor = build_model({"model": dict(TINY_MODEL, num_classes=5)})
    path = save_checkpoint({"model": donor.backbone.state_dict()}, tmp_path / "backbone.pt")
    cfg = tiny_config(tiny_data, tmp_path)
    cfg["model"] = dict(TINY_MODEL, num_classes=5, backbone_weights=str(path))
    model = build_model({"model": cfg["model"]})
    assert not torch.equal(model.backbone.stem.conv1.conv.weight, donor.backbone.stem.conv1.conv.weight)
    Trainer(cfg, progress=False)._load_initial_weights(model)
    for k, v in donor.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k


@pytest.mark.slow
def test_compiled_training_learns_and_saves_plain_weights(tiny_data, tmp_path):
    """train.compile: the step runs through torch.compile (and its smaller last batch compiles
    too), fed by data worker processes as by default; the checkpoint holds the model's own keys,
    so it loads into an eager model."""
    cfg = tiny_config(tiny_data, tmp_path, epochs=2, compile=True, workers=2)
    result = Trainer(cfg, progress=False).train()
    rows = list(csv.DictReader(open(Path(result["run_dir"]) / "results.csv")))
    assert len(rows) == 2 and all(torch.isfinite(torch.tensor(float(r["train/total"]))) for r in rows)
    assert float(rows[1]["train/total"]) < float(rows[0]["train/total"])
    ckpt = load_checkpoint(Path(result["run_dir"]) / "last.pt")
    state = model_state(ckpt)
    assert not any("_orig_mod" in k for k in state)
    build_model({"model": ckpt["config"]["model"]}).load_state_dict(state)  # strict
