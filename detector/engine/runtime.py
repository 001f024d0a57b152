"""Process policy for a training run: seeding, RNG state, device and CPU threads.

Shared by every trainer (detection, classification). Call order in a run:
``device = select_device(cfg.device)`` -> join DDP -> ``seed_everything(seed, rank)`` ->
``configure_threads(threads, world, device)``.

Data randomness (order, augmentation) is *not* drawn from these global streams: it is a pure
function of ``(seed, epoch, rank, position)`` (see :mod:`detector.data.sampler`), so it does
not depend on the number of workers or on where a run was interrupted. The global streams
seeded here drive model initialisation and anything else the model draws (e.g. dropout);
:func:`rng_state` / :func:`set_rng_state` carry them through a checkpoint.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
from typing import Any, Dict

import numpy as np
import torch

from ..config import ConfigError
from . import distributed as dist_utils

LOGGER = logging.getLogger("cspdet.train")  # the trainer's log, where train.log picks it up

__all__ = ["seed_everything", "rng_state", "set_rng_state", "select_device", "cpu_threads",
           "configure_threads", "compile_for_training", "cpu_has_native_bf16"]


def seed_everything(seed: int, rank: int = 0, deterministic: bool = False) -> None:
    """Seed python, numpy and torch with ``seed + rank`` (each DDP rank its own stream).

    ``deterministic``: ``torch.use_deterministic_algorithms`` (warn-only) and no cuDNN
    autotuning, for bitwise-repeatable GPU runs at some speed cost.
    """
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % 2 ** 32)
    torch.manual_seed(s)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> Dict[str, Any]:
    """Python, numpy and torch RNG states as tensors / lists (``weights_only``-loadable)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def select_device(name: str = "") -> torch.device:
    """``""`` = this process's CUDA device (``LOCAL_RANK``) when CUDA exists, else CPU;
    ``cuda`` without an index = ``cuda:LOCAL_RANK``. CUDA asked for but absent: ConfigError."""
    if not name:
        if torch.cuda.is_available():
            return torch.device("cuda", dist_utils.local_rank())
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"train.device: {e}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={name} but CUDA is not available; use device=cpu")
        if device.index is None:
            device = torch.device("cuda", dist_utils.local_rank())
    return device


def cpu_threads(world: int = 1) -> int:
    """Cores per process (at least 1), so N CPU processes do not oversubscribe the machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return max(1, cores // max(world, 1))


def configure_threads(threads: int = 0, world: int = 1, device: torch.device = torch.device("cpu"),
                      deterministic: bool = False) -> int:
    """Torch intra-op threads: ``threads`` when > 0, else (on CPU) the cores divided among the
    ``world`` processes; cuDNN autotuning on CUDA unless ``deterministic``. Returns the count."""
    if threads > 0 or device.type == "cpu":
        torch.set_num_threads(threads or cpu_threads(world))
    if device.type == "cuda" and not deterministic:
        torch.backends.cudnn.benchmark = True
    return torch.get_num_threads()


def setup_process(train_cfg):
    """The first step of every trainer: device, process group, seeds and thread policy from a
    ``train`` section (its ``device``, ``seed``, ``deterministic``, ``threads``); returns
    ``(device, distributed, rank, world_size)``."""
    device = select_device(train_cfg.device)
    distributed = dist_utils.init_distributed(device)
    rank, world = dist_utils.rank(), dist_utils.world_size()
    seed_everything(train_cfg.seed, rank, train_cfg.deterministic)
    # the cores of this machine are shared by its own processes only (not the job's world)
    configure_threads(train_cfg.threads, dist_utils.local_world_size(), device, train_cfg.deterministic)
    return device, distributed, rank, world


def agree_run_dir(save_dir, name: str, exist_ok: bool, given=None):
    """The run folder every rank uses: ``given`` (a resumed run's folder), else rank 0 names a
    new one (``name``, ``name2`` ...) and broadcasts it."""
    from pathlib import Path

    from .logger import next_run_dir

    run_dir = given
    if run_dir is None and dist_utils.rank() == 0:
        run_dir = next_run_dir(save_dir, name, exist_ok)
    return Path(dist_utils.broadcast_object(str(run_dir) if run_dir else None))


def compile_for_training(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``torch.compile`` of the training forward (its backward is compiled with it).

    Why: on a CPU the eager step of a dense-block network is dominated by work the FLOPs do not
    count (concatenations, batch norm, activations and their backward as separate passes over
    memory); Inductor fuses them (benchmarks/RESULTS.md, "Training throughput"). Static shapes:
    each batch shape (the full batch and an epoch's smaller last one) compiles once, a few
    minutes on 2 cores, cached for the next run; a dynamic-shape graph compiled slower and ran
    no faster. Inductor on a CPU needs a C++ compiler: without one the run stays eager (logged).
    """
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        LOGGER.warning("train.compile: no C++ compiler (g++, c++ or clang++) on PATH, which "
                       "torch.compile needs on a CPU; training without it")
        return model
    if dist_utils.is_main_process():
        LOGGER.info("train.compile: the first step of each batch shape compiles the model "
                    "(minutes on a few CPU cores, cached afterwards); epoch 1's time includes it")
    return torch.compile(model, dynamic=False)


def cpu_has_native_bf16() -> bool:
    """The CPU computes bf16 in hardware (AMX tiles or AVX-512 BF16): there bf16 autocast
    speeds training up; elsewhere it is emulated and slower than float32."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
