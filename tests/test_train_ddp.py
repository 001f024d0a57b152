"""DDP on CPU: two processes with the gloo backend (what ``torchrun --nproc_per_node 2`` sets up)
and 2 data workers each train a tiny run: the sampler halves the batches per epoch, only rank 0
writes the run folder, the ranks end with identical weights, each rank draws its own
augmentation, and the same seed repeats the run exactly; a last.pt resumed by another number
of processes continues the lr schedule at its epoch.

Launched as users launch it (``torchrun``, slow): a run stopped mid-epoch by SIGTERM to the
launcher and resumed ends with the uninterrupted run's weights; two ``torchrun --nnodes 2``
launches rendezvous on 127.0.0.1, stop together and resume.
"""
import csv
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from conftest import REPO, tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, cfg, port, out_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      CSPDET_BATCH_LOG=os.path.join(out_dir, "batches.jsonl"))
    torch.set_num_threads(1)
    from detector.engine.ema import unwrap
    from detector.engine.trainer import Trainer
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    # parameters only: without SyncBN (CUDA only) each rank's BN running stats see its own
    # last batch; DDP re-broadcasts rank 0's buffers at every forward
    params = {k: v.detach() for k, v in unwrap(trainer.model).named_parameters()}
    torch.save(params, os.path.join(out_dir, f"rank{rank}.pt"))


def _one_image_data(tiny_data, root):
    """16 train images that are all the same picture with the same boxes: whatever differs
    between two batches is augmentation."""
    src_root = tiny_data["root"]
    gt = json.load(open(os.path.join(src_root, tiny_data["train"]["annotations"])))
    first = gt["images"][0]
    anns = [a for a in gt["annotations"] if a["image_id"] == first["id"]]
    (root / "images").mkdir(parents=True)
    src = os.path.join(src_root, tiny_data["train"]["images"], first["file_name"])
    images, annotations = [], []
    for i in range(16):
        name = f"{i:03d}{os.path.splitext(first['file_name'])[1]}"
        shutil.copy(src, root / "images" / name)
        images.append(dict(first, id=i + 1, file_name=name))
        annotations += [dict(a, id=len(annotations) + 1, image_id=i + 1) for a in anns]
    json.dump(dict(gt, images=images, annotations=annotations), open(root / "train.json", "w"))
    data = dict(tiny_data, train={"images": str(root / "images"), "annotations": str(root / "train.json")})
    data["val"] = {k: os.path.join(src_root, v) for k, v in tiny_data["val"].items()}
    return data


def _run(cfg, out_dir):
    out_dir.mkdir()
    mp.spawn(_worker, args=(cfg, _free_port(), str(out_dir)), nprocs=2, join=True)
    logs = []
    for suffix in ("", ".rank1"):
        rows = [json.loads(line) for line in open(out_dir / f"batches.jsonl{suffix}")]
        logs.append([(r["epoch"], r["batch"], r["crc"]) for r in rows])
    return logs, [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def _ddp_config(tiny_data, tmp_path):
    data = _one_image_data(tiny_data, tmp_path / "data")
    cfg = tiny_config(data, tmp_path / "runs", epochs=1, batch_size=2, device="cpu", workers=2)
    cfg["train"]["augment"] = {"mosaic": 0.5, "mixup": 0.0}
    cfg["train"]["close_mosaic"] = 0
    return data, cfg


def _loader_crcs(data, cfg, rank, workers):
    """What rank ``rank``'s loader yields in epoch 0, rebuilt in this process."""
    import zlib
    from detector.data import build_dataloader, build_dataset, load_augment_config
    tc = cfg["train"]
    ds = build_dataset(data, "train", tc["img_size"], augment=load_augment_config(tc["augment"]),
                       seed=tc["seed"] if "seed" in tc else 0)
    loader = build_dataloader(ds, tc["batch_size"], workers, shuffle=True, seed=tc.get("seed", 0),
                              distributed=True, rank=rank, world_size=2)
    out = []
    for i, b in enumerate(loader):
        crc = zlib.crc32(b["images"].numpy().tobytes())
        for t in b["targets"]:
            crc = zlib.crc32(t.numpy().tobytes(), crc)
        out.append((0, i, crc))
    loader.shutdown()
    return out


def test_ddp_with_workers_gives_each_rank_its_own_augmentation(tiny_data, tmp_path):
    data, cfg = _ddp_config(tiny_data, tmp_path)
    logs, dumps = _run(cfg, tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny"]  # rank 1 made none
    run = tmp_path / "runs" / "tiny"
    for name in ("config.yaml", "last.pt", "best.pt", "results.csv", "results.png"):
        assert (run / name).is_file(), name
    ck = torch.load(run / "last.pt", weights_only=True)
    # 16 images / 2 ranks / batch 2 = 4 optimizer steps in the epoch (8 in one process)
    assert ck["world_size"] == 2 and ck["scheduler"]["last_step"] == 4
    # each rank's own RNG stream is in last.pt (seeded per rank), so a resume restores both
    assert len(ck["rng_ranks"]) == 2
    assert not torch.equal(ck["rng_ranks"][0]["torch"], ck["rng_ranks"][1]["torch"])
    assert torch.equal(ck["rng"]["torch"], ck["rng_ranks"][0]["torch"])
    assert dumps[0]
    for k, v in dumps[0].items():
        torch.testing.assert_close(dumps[1][k], v, atol=0, rtol=0, msg=k)
        torch.testing.assert_close(ck["model"][k], v, atol=0, rtol=0, msg=k)
    # the same picture everywhere: equal batches would mean equal random draws on both ranks
    rank0, rank1 = logs
    assert len(rank0) == len(rank1) == 4
    assert all(a[2] != b[2] for a, b in zip(rank0, rank1)), (rank0, rank1)
    assert len({r[2] for r in rank0}) == 4  # and a new draw for every batch
    # reproducible from the seed alone: each rank's batches, rebuilt here without workers
    assert _loader_crcs(data, cfg, 0, workers=0) == rank0
    assert _loader_crcs(data, cfg, 1, workers=0) == rank1


@pytest.mark.slow
def test_ddp_with_workers_repeats_exactly_for_the_same_seed(tiny_data, tmp_path):
    _, cfg = _ddp_config(tiny_data, tmp_path)
    logs, dumps = _run(cfg, tmp_path / "a")
    cfg["train"]["name"] = "again"
    logs2, dumps2 = _run(cfg, tmp_path / "b")
    assert logs2 == logs
    for r in (0, 1):
        for k, v in dumps[r].items():
            torch.testing.assert_close(dumps2[r][k], v, atol=0, rtol=0, msg=k)


def test_resume_with_another_number_of_processes_continues_the_lr_schedule_at_the_epoch(tiny_data, tmp_path):
    """A last.pt that 2 processes wrote (half the optimizer steps per epoch) resumed by one: the
    lr schedule goes on from the epoch's first step in the new layout, so the run ends on the
    schedule's last step (not half an epoch of steps short of it)."""
    from detector.engine.trainer import Trainer
    Trainer(tiny_config(tiny_data, tmp_path / "runs", epochs=1, device="cpu"), progress=False).train()
    last = tmp_path / "runs" / "tiny" / "last.pt"
    ck = torch.load(last, weights_only=True)
    steps = ck["scheduler"]["last_step"]  # 16 images / batch 4 in one process
    assert (ck["epoch"], ck["batch"], steps) == (1, 0, 4)
    ck.update(world_size=2, scheduler=dict(ck["scheduler"], last_step=steps // 2))  # as 2 ranks save it
    torch.save(ck, last)
    Trainer(resume=str(last), overrides=["train.epochs=2"], progress=False).train()
    assert torch.load(last, weights_only=True)["scheduler"]["last_step"] == 2 * steps


# ------------------------------------------------------------------ through torchrun

def _torchrun(launch_args, train_args, cwd, batch_log):
    """``torchrun LAUNCH tools/train.py TRAIN`` in its own session (as a shell job runs)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), CSPDET_BATCH_LOG=str(batch_log))
    cmd = [sys.executable, "-m", "torch.distributed.run", *launch_args, "--max-restarts", "0",
           str(REPO / "tools" / "train.py"), "--no-progress", *train_args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _finish(procs, timeout=400):
    """Wait for every launcher; kill what is left after ``timeout`` s (the test then fails)."""
    outs = []
    deadline = time.time() + timeout
    for p in procs:
        try:
            outs.append(p.communicate(timeout=max(1.0, deadline - time.time()))[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                if q.poll() is None:
                    os.killpg(q.pid, signal.SIGKILL)
            raise AssertionError("torchrun did not finish:\n" + "\n".join(
                q.communicate()[0] for q in procs))
    return [p.returncode for p in procs], "\n".join(outs)


def _standalone(port):
    return ["--nnodes", "1", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--local-addr", "127.0.0.1"]


def _two_nodes(port, run_id):
    """One of the two launches of a 2-node job on this machine: 1 process each, rendezvous on
    the loopback address (torchrun gives the node ranks in the order the launches join)."""
    return ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-id", run_id,
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--local-addr", "127.0.0.1"]


def _batches(log):
    """{(epoch, batch): (image ids, size, crc)} of one rank's CSPDET_BATCH_LOG file (its
    complete lines: the run may be writing the next one)."""
    lines = open(log).readlines() if os.path.exists(log) else []
    rows = [json.loads(line) for line in lines if line.endswith("\n")]
    return {(r["epoch"], r["batch"]): (r["ids"], r["size"], r["crc"]) for r in rows}


def _stop_after(procs, log, batch, timeout=300):
    """SIGTERM to the first launcher (what a scheduler or Ctrl-C does) once rank 0 has trained
    batch ``batch`` of epoch 0; the launchers' exit codes and output."""
    deadline = time.time() + timeout
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if any(k >= (0, batch) for k in _batches(log)):
            break
        time.sleep(0.05)
    assert all(p.poll() is None for p in procs), _finish(procs)[1]
    procs[0].send_signal(signal.SIGTERM)
    return _finish(procs)


def _write_cfg(tmp_path, tiny_data, **train):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tiny_data, tmp_path / "runs", device="cpu", **train)))
    return path


@pytest.mark.slow
def test_ddp_resume_mid_epoch_after_sigterm_to_torchrun_equals_the_uninterrupted_run(tiny_data, tmp_path):
    """2 ranks x 2 data workers, 8 batches per rank and epoch, mosaic closed in epoch 2 (the
    loaders are rebuilt there). Stopped by SIGTERM to the launcher inside the run, resumed with
    ``--resume last.pt``: weights, EMA, optimizer moments and lr step equal the uninterrupted
    run's bitwise. Why exactly: every rank's batches are keyed on (seed, epoch, rank,
    position), last.pt holds rank 0's weights, EMA and optimizer (identical on every rank after
    DDP's all-reduce), BN buffers are rank 0's on every forward (DDP broadcasts them), and a
    2-rank gloo all-reduce sums the same two numbers whatever the order."""
    cfg = _write_cfg(tmp_path, tiny_data, epochs=2, batch_size=1, workers=2, checkpoint_interval=1)
    full = _torchrun(_standalone(_free_port()), ["--cfg", str(cfg), "train.name=full"], tmp_path,
                     tmp_path / "full.jsonl")
    codes, out = _finish([full])
    assert codes == [0], out
    first = _torchrun(_standalone(_free_port()), ["--cfg", str(cfg)], tmp_path, tmp_path / "first.jsonl")
    codes, out = _stop_after([first], tmp_path / "first.jsonl", batch=2)
    assert codes != [0] and "resume with --resume" in out, out
    last = tmp_path / "runs" / "tiny" / "last.pt"
    stopped = torch.load(last, weights_only=True)
    assert 0 < stopped["batch"] < 8 and stopped["world_size"] == 2, (stopped["epoch"], stopped["batch"])
    again = _torchrun(_standalone(_free_port()), ["--resume", str(last)], tmp_path,
                      tmp_path / "resumed.jsonl")
    codes, out = _finish([again])
    assert codes == [0], out
    assert f"resuming at epoch {stopped['epoch'] + 1}, batch {stopped['batch']}" in out
    a = torch.load(tmp_path / "runs" / "full" / "last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert (b["epoch"], b["batch"], b["scheduler"]) == (a["epoch"], a["batch"], a["scheduler"]) == \
        (2, 0, a["scheduler"])
    for key in ("model", "ema"):
        for k, v in a[key].items():
            torch.testing.assert_close(b[key][k], v, atol=0, rtol=0, msg=f"{key}.{k}")
    for pid, state in a["optimizer"]["state"].items():
        for name, v in state.items():
            torch.testing.assert_close(b["optimizer"]["state"][pid][name], v, atol=0, rtol=0)
    # and each rank trained on the same batches: the resumed part begins where the stop was
    position = (stopped["epoch"], stopped["batch"])
    for suffix in ("", ".rank1"):
        whole = _batches(tmp_path / f"full.jsonl{suffix}")
        done = {k: v for k, v in _batches(tmp_path / f"first.jsonl{suffix}").items() if k < position}
        resumed = _batches(tmp_path / f"resumed.jsonl{suffix}")
        assert min(resumed) == position
        assert {**done, **resumed} == whole


@pytest.mark.slow
def test_two_torchrun_nodes_on_loopback_train_stop_together_and_resume(tiny_data, tmp_path):
    """``torchrun --nnodes 2`` twice on one machine (c10d rendezvous on 127.0.0.1, 1 process
    each): SIGTERM to one node's launcher stops both ranks at the same batch (last.pt written
    once, by global rank 0), the two launches resume from it and finish the 2 epochs."""
    cfg = _write_cfg(tmp_path, tiny_data, epochs=2, batch_size=1, workers=0)
    log = tmp_path / "first.jsonl"
    port = _free_port()
    nodes = [_torchrun(_two_nodes(port, "first"), ["--cfg", str(cfg)], tmp_path, log) for _ in range(2)]
    codes, out = _stop_after(nodes, log, batch=1)
    assert codes[0] != 0 and codes[1] != 0 and "resume with --resume" in out, out
    assert os.listdir(tmp_path / "runs") == ["tiny"]  # one run folder for the two nodes
    last = tmp_path / "runs" / "tiny" / "last.pt"
    stopped = torch.load(last, weights_only=True)
    assert stopped["world_size"] == 2 and (stopped["epoch"], stopped["batch"]) < (2, 0)
    # global ranks 0 and 1 trained the same batch numbers (one process per node, no LOCAL_RANK mix-up)
    assert _batches(log).keys() == _batches(f"{log}.rank1").keys()

    port = _free_port()
    nodes = [_torchrun(_two_nodes(port, "resume"), ["--resume", str(last)], tmp_path,
                       tmp_path / "resumed.jsonl") for _ in range(2)]
    codes, out = _finish(nodes)
    assert codes == [0, 0], out
    assert out.count("resuming at epoch") == 1, out  # logged by global rank 0 alone
    run = tmp_path / "runs" / "tiny"
    final = torch.load(last, weights_only=True)
    assert (final["epoch"], final["batch"], final["world_size"]) == (2, 0, 2)
    assert final["scheduler"]["last_step"] == 16  # 16 images / 2 ranks / batch 1, 2 epochs
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for r in rows:
        for key in ("train/total", "AP", "AP50"):
            assert math.isfinite(float(r[key])), (key, r)
    assert all(torch.isfinite(v).all() for v in final["model"].values() if v.is_floating_point())
