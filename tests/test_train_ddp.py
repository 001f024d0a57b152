"""DDP on CPU: two processes with the gloo backend (what ``torchrun --nproc_per_node 2`` sets up)
and 2 data workers each train a tiny run: the sampler halves the batches per epoch, only rank 0
writes the run folder, the ranks end with identical weights, each rank draws its own
augmentation, and the same seed repeats the run exactly.
"""
import json
import os
import shutil
import socket

import pytest
import torch
import torch.multiprocessing as mp

from conftest import tiny_config


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
