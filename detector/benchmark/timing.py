"""Latency timing: runners alternate in blocks of back-to-back calls, ratios taken per round.

Load from other processes then hits every model alike, while each block runs with the caches
its own model left warm (one call at a time interleaved measures small models cold).
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple


def time_blocks(runners: Mapping[Hashable, Callable[[], object]], rounds: int, block: int, warmup: int,
                desc: str) -> Dict[Hashable, List[float]]:
    """Per round and runner: ``block`` back-to-back calls, the block's median (seconds).

    Runners alternate block by block, so load from other processes hits them all alike,
    while each block runs with the caches its own model left warm.
    """
    from tqdm import tqdm

    for run in runners.values():
        for _ in range(warmup):
            run()
    samples: Dict[Hashable, List[float]] = {k: [] for k in runners}
    for _ in tqdm(range(rounds), desc=desc, unit="round", leave=False):
        for key, run in runners.items():
            times = []
            for _ in range(block):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            samples[key].append(statistics.median(times))
    return samples


def median_ms(samples: Sequence[float]) -> float:
    return 1000.0 * statistics.median(samples)


def ratio(rounds_of: Mapping, a, b) -> Optional[Tuple[float, float, float]]:
    """Median, min and max over rounds of time(a) / time(b) (same rounds, same run)."""
    ra, rb = rounds_of.get(a), rounds_of.get(b)
    if not ra or not rb:
        return None
    rs = [x / y for x, y in zip(ra, rb)]
    return statistics.median(rs), min(rs), max(rs)


def set_threads(threads: int) -> bool:
    """``threads`` for PyTorch, OpenCV and ONNX Runtime's one global pool; False when ORT's
    pool was set up before (sessions then keep their own threads)."""
    import cv2
    import torch

    from ..export.onnx_runtime import use_global_thread_pool

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    return use_global_thread_pool(threads)
