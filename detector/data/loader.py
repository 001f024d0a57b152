"""Batches: collate, a DataLoader that reports skipped images per epoch, multi-scale resizing.

Reproducibility: a shuffled (or distributed) loader draws from a
:class:`~detector.data.sampler.ResumableSampler`, so the order of every epoch is a function of
``(seed, epoch)`` and, for a dataset with ``reseed`` (the detection dataset), each item's
augmentation is seeded from ``(seed, epoch, rank, position)`` by its key: a run repeats
exactly for the same seed whatever the number of workers, each DDP rank has its own stream,
and a resumed epoch starts at a position without loading the samples before it.
"""
from __future__ import annotations

import atexit
import logging
import math
import random
import signal
import weakref
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, get_worker_info

from .sampler import ResumableSampler

log = logging.getLogger(__name__)


def collate(samples: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Stack images; keep per-image targets and meta as lists.

    In a worker process the images are stacked straight into shared memory (as PyTorch's
    default collate does), saving the copy that sending a batch to the main process makes.
    """
    images = [s["image"] for s in samples]
    out = None
    if get_worker_info() is not None and images:
        storage = images[0]._typed_storage()._new_shared(sum(x.numel() for x in images),
                                                         device=images[0].device)
        out = images[0].new(storage).resize_(len(images), *images[0].shape)
    return {"images": torch.stack(images, 0, out=out),
            "targets": [s["targets"] for s in samples],
            "meta": [s["meta"] for s in samples],
            "skipped": [p for s in samples for p in s.get("skipped", ())]}


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2 ** 32
    random.seed(seed)
    np.random.seed(seed)
    cv2.setNumThreads(0)  # workers are the parallelism; OpenCV threads would oversubscribe
    # Ctrl-C, `timeout` and job schedulers signal the whole process group: the main process
    # must finish its step and write last.pt, which fails if the workers die first. The main
    # process shuts its workers down, and they exit by themselves if it is killed.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    info = get_worker_info()
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(seed)


class DetectionDataLoader(DataLoader):
    """A DataLoader whose batches are ``images``/``targets``/``meta`` dicts.

    Each pass (epoch) counts the images that could not be read and were replaced, logs them
    when the pass ends (or is abandoned) and keeps them in ``skipped_last_epoch``. With a
    sampler whose epoch the caller does not set (``sampler.set_epoch``), it sets it to the pass
    number so every epoch shuffles differently.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.epoch = 0                     # passes started so far
        self._auto_epoch = 0
        self.skipped_last_epoch: List[str] = []
        _LIVE_LOADERS.add(self)

    def shutdown(self) -> None:
        """Stop the persistent workers now (a later pass starts new ones)."""
        iterator = getattr(self, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
        self._iterator = None

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        sampler = self.sampler
        if hasattr(sampler, "set_epoch") and getattr(sampler, "epoch", None) == self._auto_epoch:
            if sampler.epoch != epoch:
                sampler.set_epoch(epoch)  # the caller did not call set_epoch itself
            self._auto_epoch = epoch
        skipped: Dict[str, int] = {}
        try:
            for batch in super().__iter__():
                for path in batch.pop("skipped", ()):
                    skipped[path] = skipped.get(path, 0) + 1
                yield batch
        finally:  # also when the caller stops early (the generator is closed)
            self._report(epoch, skipped)

    def _report(self, epoch: int, skipped: Dict[str, int]) -> None:
        self.skipped_last_epoch = sorted(skipped)
        if skipped:
            shown = ", ".join(self.skipped_last_epoch[:10])
            more = f" ... ({len(skipped) - 10} more)" if len(skipped) > 10 else ""
            log.warning("data epoch %d: %d unreadable image(s) skipped and replaced "
                        "(%d times): %s%s", epoch, len(skipped), sum(skipped.values()), shown, more)


_LIVE_LOADERS: "weakref.WeakSet[DetectionDataLoader]" = weakref.WeakSet()


@atexit.register
def _shutdown_live_loaders() -> None:
    """Workers ignore SIGTERM (see ``_seed_worker``), so multiprocessing's exit-time
    ``terminate()`` cannot stop them and an interpreter exiting with a loader alive would hang;
    this runs before that (atexit is last-in first-out) and shuts them down cleanly."""
    for loader in list(_LIVE_LOADERS):
        loader.shutdown()


def build_dataloader(dataset, batch_size: int, workers: int = 2, shuffle: bool = True,
                     seed: int = 0, distributed: bool = False, drop_last: bool = False,
                     rank: Optional[int] = None, world_size: Optional[int] = None
                     ) -> DetectionDataLoader:
    """DataLoader with persistent workers (when ``workers > 0``), pinned memory on CUDA and
    worker seeding. Shuffled or ``distributed``: a :class:`ResumableSampler` over this rank's
    share (``rank``/``world_size`` default to the process group's); its keys carry per-sample
    seeds when the dataset can take them (it has ``reseed``). ``loader.sampler.set_epoch(e,
    start)`` picks the epoch and the position a pass starts at."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    sampler = None
    if shuffle or distributed:
        if distributed and (rank is None or world_size is None):
            import torch.distributed as dist
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        sampler = ResumableSampler(dataset, shuffle=shuffle, seed=int(seed), rank=rank or 0,
                                   world_size=world_size or 1, drop_last=drop_last,
                                   keys=hasattr(dataset, "reseed"))
    if workers == 0 and hasattr(dataset, "reseed"):
        dataset.reseed(int(seed))
    return DetectionDataLoader(
        dataset, batch_size=batch_size, sampler=sampler,
        num_workers=workers, collate_fn=collate, pin_memory=torch.cuda.is_available(),
        drop_last=drop_last, persistent_workers=workers > 0, worker_init_fn=_seed_worker,
        generator=generator, prefetch_factor=4 if workers > 0 else None)


# ------------------------------------------------------------------------ multi-scale
def random_size(rng: Union[random.Random, np.random.Generator], img_size: int,
                scale_range: Tuple[float, float] = (0.5, 1.5), stride: int = 32) -> int:
    """A random multiple of ``stride`` in ``[img_size * lo, img_size * hi]`` (multi-scale)."""
    lo = max(stride, int(math.ceil(img_size * scale_range[0] / stride)) * stride)
    hi = max(lo, int(math.floor(img_size * scale_range[1] / stride)) * stride)
    n = (hi - lo) // stride + 1
    k = int(rng.integers(n)) if isinstance(rng, np.random.Generator) else rng.randrange(n)
    return lo + k * stride


def rescale_batch(batch: Dict[str, Any], size: Union[int, Sequence[int]]) -> Dict[str, Any]:
    """Resize a batch's images to ``size`` (int or (h, w)) and scale its targets to match.

    Returns a new batch dict (``meta`` ratio/pad scaled too); images stay uint8.
    """
    images = batch["images"]
    h, w = images.shape[-2:]
    th, tw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if (th, tw) == (h, w):
        return batch
    sy, sx = th / h, tw / w
    resized = F.interpolate(images.float(), size=(th, tw), mode="bilinear", align_corners=False,
                            antialias=th < h or tw < w)
    resized = resized.round_().clamp_(0, 255).to(torch.uint8)
    scale = torch.tensor([1.0, sx, sy, sx, sy])
    targets = [t * scale.to(t.device, t.dtype) for t in batch["targets"]]
    meta = []
    for m in batch["meta"]:
        m = dict(m)
        m["ratio"] = m["ratio"] * sx if sx == sy else m["ratio"]
        m["pad"] = (m["pad"][0] * sx, m["pad"][1] * sy)
        meta.append(m)
    out = dict(batch)
    out.update(images=resized, targets=targets, meta=meta)
    return out
