"""DDP on CPU: two processes with the gloo backend (what ``torchrun --nproc_per_node 2`` sets up)
train a tiny run: the DistributedSampler halves the batches per epoch, only rank 0 writes the run
folder, and the ranks end with identical weights.
"""
import os
import socket

import torch
import torch.multiprocessing as mp

from test_train import tiny_config, tiny_data  # noqa: F401  (tiny_data is a fixture)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, cfg, port, out_dir):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from detector.engine.ema import unwrap
    from detector.engine.trainer import Trainer
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    # parameters only: without SyncBN (CUDA only) each rank's BN running stats see its own
    # last batch; DDP re-broadcasts rank 0's buffers at every forward
    params = {k: v.detach() for k, v in unwrap(trainer.model).named_parameters()}
    torch.save(params, os.path.join(out_dir, f"rank{rank}.pt"))


def test_ddp_two_gloo_processes_complete(tiny_data, tmp_path):  # noqa: F811
    cfg = tiny_config(tiny_data, tmp_path / "runs", epochs=1, batch_size=2, device="cpu")
    mp.spawn(_worker, args=(cfg, _free_port(), str(tmp_path)), nprocs=2, join=True)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny"]  # rank 1 made none
    run = tmp_path / "runs" / "tiny"
    for name in ("config.yaml", "last.pt", "best.pt", "results.csv", "results.png"):
        assert (run / name).is_file(), name
    ck = torch.load(run / "last.pt", weights_only=True)
    # 16 images / 2 ranks / batch 2 = 4 optimizer steps in the epoch (8 in one process)
    assert ck["world_size"] == 2 and ck["scheduler"]["last_step"] == 4
    dumps = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert dumps[0]
    for k, v in dumps[0].items():
        torch.testing.assert_close(dumps[1][k], v, atol=0, rtol=0, msg=k)
    for k, v in dumps[0].items():
        torch.testing.assert_close(ck["model"][k], v, atol=0, rtol=0, msg=k)
