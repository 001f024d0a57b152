"""DDP helpers for ``torchrun --nproc_per_node N tools/train.py ...`` (one or several nodes).

torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE`` and ``LOCAL_WORLD_SIZE``; without them
everything is a no-op and the run is a single process. Backend: NCCL on CUDA, gloo on CPU (what
the tests use). On several nodes ``RANK``/``WORLD_SIZE`` count every process of the job and
``LOCAL_*`` those of this machine: the run folder and logs belong to global rank 0
(:func:`is_main_process`), devices and CPU cores to the local numbers.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Mapping

import torch
import torch.distributed as dist


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    """Processes on this machine (``world_size()`` on one node)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size())))


def is_main_process() -> bool:
    return rank() == 0


def init_distributed(device: torch.device) -> bool:
    """Join the process group torchrun describes; returns whether the run is distributed."""
    if env_world_size() <= 1 or is_distributed():
        return is_distributed()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return True


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor / world_size()


def all_reduce_dict(values: Mapping[str, torch.Tensor]) -> dict:
    """Mean over ranks of a dict of scalar tensors (one collective for the whole dict)."""
    if not is_distributed() or not values:
        return dict(values)
    keys = list(values)
    stacked = all_reduce_mean(torch.stack([values[k].float().reshape(()) for k in keys]))
    return dict(zip(keys, stacked))


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on any rank (e.g. a stop request seen by one process)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_objects(obj) -> list:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in a single process): how
    rank 0 gets per-rank state such as the RNG streams to write into one checkpoint."""
    if not is_distributed():
        return [obj]
    box = [None] * world_size()
    dist.all_gather_object(box, obj)
    return box


def broadcast_object(obj, src: int = 0):
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
