"""Classification: train-cls end to end through the CLI (workers: 2), exact resume after SIGKILL
mid-epoch, eval-cls output, config typos, the checkpoint contract, the synthetic data.

The data is a tiny ImageFolder tree (4 synthetic classes, 32 px); the model a small CSP backbone
config, so every run trains for real in seconds.
"""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from detector.engine.checkpoint import load_checkpoint, model_state

REPO = Path(__file__).resolve().parents[1]

TINY_BACKBONE = {
    "arch": "cspnet", "name": "tiny_cls", "num_classes": 1000, "act": "leaky_relu",
    "stem": {"type": "conv", "channels": [8], "kernel_size": 3, "stride": 2, "pool": "max",
             "pool_kernel": 2},
    "stage_defaults": {"csp": True, "block": "basic", "down": "conv", "stride": 2},
    "stages": [{"depth": 1, "out_channels": 16, "stride": 1, "down": "none"},
               {"depth": 1, "out_channels": 16}, {"depth": 1, "out_channels": 32},
               {"depth": 1, "out_channels": 32}],
}


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """ImageFolder tree: 4 classes x (12 train, 4 val) images of 32 px."""
    from detector.classification.synthetic import CLASSES, draw_sample
    root = tmp_path_factory.mktemp("imagefolder")
    for split, n, offset in (("train", 12, 0), ("val", 4, 1)):
        for c in (0, 1, 5, 7):  # circle, square, stripes, dots
            folder = root / split / CLASSES[c]
            folder.mkdir(parents=True)
            rng = np.random.default_rng([offset, c])
            for i in range(n):
                cv2.imwrite(str(folder / f"{i}.png"), draw_sample(rng, c, 32)[..., ::-1])
    return root


def tiny_config(save_dir, **train):
    t = {"name": "tiny", "epochs": 2, "batch_size": 4, "img_size": 32, "workers": 2, "threads": 1,
         "optimizer": "adamw", "lr": 0.003, "warmup_epochs": 0.5, "save_dir": str(save_dir),
         "augment": {"scale": [0.6, 1.0], "mixup": 0.2, "cutmix": 1.0}, "ema_tau": 10}
    t.update(train)
    return {"model": TINY_BACKBONE, "data": {"crop_pct": 1.0}, "train": t}


def run(tool, args, cwd, wait=True):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(REPO / "tools" / f"{tool}.py"), *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def full_run(tiny_folder, tmp_path_factory):
    """An uninterrupted 2-epoch run (12 batches per epoch) through tools/train_cls.py."""
    work = tmp_path_factory.mktemp("cls_full")
    cfg = work / "cls.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(work / "runs")))
    proc = run("train_cls", ["--cfg", str(cfg), "--data", str(tiny_folder), "--no-progress"], work)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work, cfg, work / "runs" / "tiny"


def test_train_cls_writes_the_run_folder_and_a_rebuildable_checkpoint(full_run):
    _, _, run_dir = full_run
    for name in ("config.yaml", "last.pt", "best.pt", "results.csv", "results.png", "train.log"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    rows = list(csv.DictReader(open(run_dir / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for key in ("train/loss", "val/loss", "top1", "top5", "lr"):
        assert all(r[key] != "" for r in rows), key
    from detector import build_model
    for name in ("last.pt", "best.pt"):
        ck = torch.load(run_dir / name, weights_only=True)
        assert ck["names"] == ["circle", "dots", "square", "stripes"]
        assert set(ck["config"]) >= {"model", "data", "train"}
        assert ck["config"]["model"]["num_classes"] == 4
        model = build_model(ck["config"])  # the classifier comes back from the file alone
        model.load_state_dict(model_state(ck))
        assert model.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 4)
    last = load_checkpoint(run_dir / "last.pt")
    assert last["epoch"] == 2 and last["batch"] == 0
    assert {"optimizer", "scheduler", "scaler", "rng", "ema"} <= set(last)
    assert "model" not in load_checkpoint(run_dir / "best.pt")  # best.pt: EMA weights only


def test_resume_after_sigkill_mid_epoch_gives_the_uninterrupted_weights(full_run, tiny_folder, tmp_path):
    """Kill -9 inside epoch 2 (a checkpoint after every step), resume, compare with the full run.

    With workers: 2, mixup and cutmix on: the resumed run loads only the batches it has not
    trained on, and each sample's crop / flip and each batch's mix come from seeds of their
    position, so the weights must agree to float rounding.
    """
    _, cfg, full = full_run
    save_dir = tmp_path / "runs"
    args = ["--cfg", str(cfg), "--data", str(tiny_folder), "--no-progress",
            f"train.save_dir={save_dir}", "train.checkpoint_interval=1"]
    proc = run("train_cls", args, tmp_path, wait=False)
    last = save_dir / "tiny" / "last.pt"
    killed = None
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if last.is_file():
            try:
                ck = torch.load(last, weights_only=True)
            except Exception:
                ck = None  # replaced while reading
            if ck and ck["epoch"] == 1 and ck["batch"] >= 3:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed = ck
                break
        time.sleep(0.02)
    assert killed is not None, "the run ended before it could be killed: " + proc.stdout.read()
    ck = load_checkpoint(last)
    assert ck["epoch"] == 1 and 0 < ck["batch"] < 12, (ck["epoch"], ck["batch"])
    resumed = run("train_cls", ["--resume", str(last), "--no-progress"], tmp_path)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out
    assert f"resuming at epoch 2, batch {ck['batch']}" in out
    a, b = load_checkpoint(full / "last.pt"), load_checkpoint(last)
    assert b["epoch"] == 2 and b["scheduler"] == a["scheduler"]
    for key in ("model", "ema"):
        for k, v in a[key].items():
            torch.testing.assert_close(b[key][k], v, atol=1e-6, rtol=0, msg=f"{key}.{k}")
    rows = list(csv.DictReader(open(save_dir / "tiny" / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]


def test_eval_cls_reports_accuracy_and_confusion(full_run, tmp_path):
    _, _, run_dir = full_run
    out_json = tmp_path / "m.json"
    proc = run("eval_cls", ["--weights", str(run_dir / "best.pt"), "--no-progress", "--workers", "2",
                            "--json", str(out_json)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert "images 16 | top-1 " in text and "top-4 " in text
    assert "most confused (true -> predicted" in text and "per-class accuracy" in text
    m = json.loads(out_json.read_text())
    conf = np.array(m["confusion"])
    assert conf.shape == (4, 4) and conf.sum() == 16 and (conf.sum(1) == 4).all()
    assert m["top1"] == pytest.approx(100 * np.trace(conf) / 16)
    stored = load_checkpoint(run_dir / "best.pt")["metrics"]["top1"]
    assert m["top1"] == pytest.approx(stored)  # eval-cls agrees with the trainer's evaluation
    for pair in m["most_confused"]:
        i, j = m["names"].index(pair["true"]), m["names"].index(pair["predicted"])
        assert conf[i, j] == pair["count"] and i != j


@pytest.mark.parametrize("override,message", [
    ("train.lr0=0.1", "unknown config key 'train.lr0' (did you mean 'lr'?)"),
    ("train.augment.mixpu=0.2", "unknown config key 'train.augment.mixpu' (did you mean 'mixup'?)"),
    ("trian.epochs=3", "no section 'trian' (did you mean 'train'?)"),
])
def test_config_typo_is_one_clear_error_before_anything_runs(tiny_folder, tmp_path, capsys, override,
                                                             message):
    from detector.cli import run_command
    cfg = tmp_path / "cls.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path / "runs")))
    rc = run_command("train-cls", ["--cfg", str(cfg), "--data", str(tiny_folder), override])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_missing_or_mismatched_data_is_a_clear_error(tiny_folder, tmp_path, capsys):
    from detector.cli import run_command
    rc = run_command("train-cls", ["--cfg", "configs/backbones/cspresnet10.yaml", "--data",
                                   str(tmp_path / "nowhere")])
    assert rc == 2 and "data split 'train' not found" in capsys.readouterr().err
    bad = tmp_path / "bad"
    for split, classes in (("train", ("a", "b")), ("val", ("a", "c"))):
        for c in classes:
            (bad / split / c).mkdir(parents=True)
            cv2.imwrite(str(bad / split / c / "0.png"), np.zeros((8, 8, 3), np.uint8))
    rc = run_command("train-cls", ["--cfg", "configs/backbones/cspresnet10.yaml", "--data", str(bad)])
    assert rc == 2 and "class folders differ" in capsys.readouterr().err
    # a split folder with no class sub-folder: torchvision's FileNotFoundError, said as a data problem
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    rc = run_command("train-cls", ["--cfg", "configs/backbones/cspresnet10.yaml", "--data", str(empty)])
    err = capsys.readouterr().err
    assert rc == 2 and "one sub-folder of images per class" in err and "Traceback" not in err


def test_any_backbone_config_becomes_a_classifier_of_the_data_classes():
    from detector.classification.config import parse_cls_config
    from detector.models.builder import build_model
    for name in ("cspresnet10", "resnet10", "csppeleenet"):
        cfg = parse_cls_config(str(REPO / "configs" / "backbones" / f"{name}.yaml"), data="/x")
        model = build_model({"model": {**cfg.model, "num_classes": 7}})
        assert model(torch.rand(2, 3, 64, 64)).shape == (2, 7)
    with pytest.raises(Exception, match="detector config"):
        parse_cls_config(str(REPO / "configs" / "csppelee_efm_sam.yaml"), data="/x")


def test_synthetic_data_is_deterministic_and_cached(tmp_path):
    from detector.classification.synthetic import CLASSES, SyntheticConfig, ensure_synthetic
    cfg = SyntheticConfig(train_per_class=2, val_per_class=1, img_size=32, seed=3,
                          cache_dir=str(tmp_path))
    root = ensure_synthetic(cfg)
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(CLASSES)
    files = sorted((root / "train").rglob("*.png"))
    assert len(files) == 2 * len(CLASSES) and len(list((root / "val").rglob("*.png"))) == len(CLASSES)
    first = cv2.imread(str(files[0]))
    assert first.shape == (32, 32, 3)
    mtime = files[0].stat().st_mtime_ns
    assert ensure_synthetic(cfg) == root and files[0].stat().st_mtime_ns == mtime  # cached
    other = ensure_synthetic(SyntheticConfig(train_per_class=2, val_per_class=1, img_size=32, seed=3,
                                             cache_dir=str(tmp_path / "again")))
    assert (cv2.imread(str(other / files[0].relative_to(root))) == first).all()


def test_the_cspnet_classifier_trains_and_comes_back_from_its_checkpoint(tiny_folder, tmp_path):
    """The reference-style API (a block class in stage_defs) through the Python trainer."""
    from detector import build_model
    from detector.classification.trainer import ClsTrainer
    from detector.models import CSPNet
    from detector.models.blocks import ResNetBasicBlock
    net = CSPNet(stem_channels=8, num_classes=4, pre_kernel_size=3,
                 stage_defs=[(1, 16, ResNetBasicBlock, True), (1, 16, "basic", True),
                             (1, 32, ResNetBasicBlock, True), (1, 32, ResNetBasicBlock, True),
                             (1, 32, ResNetBasicBlock, True)])
    cfg = tiny_config(tmp_path / "runs", epochs=1, name="cspnet")
    cfg.pop("model")
    result = ClsTrainer(cfg, data=str(tiny_folder), model=net, progress=False).train()
    ck = load_checkpoint(Path(result["run_dir"]) / "best.pt")
    assert ck["config"]["model"]["stages"][0]["block"] == "basic"  # plain data, no classes
    rebuilt = build_model(ck["config"]).eval()
    rebuilt.load_state_dict(model_state(ck))
    x = torch.rand(2, 3, 32, 32)
    net.load_state_dict(model_state(ck))
    torch.testing.assert_close(rebuilt(x), net.eval()(x))
    with pytest.raises(Exception, match="classes, the data 4"):
        ClsTrainer(cfg, data=str(tiny_folder), model=CSPNet(num_classes=10), progress=False).train()


@pytest.mark.slow
def test_torchrun_two_ranks_share_each_epoch(tiny_folder, tmp_path):
    """DDP on CPU (gloo): 2 ranks x batch 4 over 48 images = 6 steps per epoch, rank 0 writes."""
    cfg = tmp_path / "cls.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path / "runs", epochs=1, workers=1)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           str(REPO / "tools" / "train_cls.py"), "--cfg", str(cfg), "--data", str(tiny_folder),
           "--no-progress"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ck = load_checkpoint(tmp_path / "runs" / "tiny" / "last.pt")
    assert ck["world_size"] == 2 and ck["scheduler"]["last_step"] == 6
