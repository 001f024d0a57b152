"""A resumable, rank-aware training sampler whose keys carry their own random seed.

Everything random about an epoch's data is a pure function of ``(seed, epoch, rank, position)``:

- the order: one permutation per ``(seed, epoch)``, shared by all ranks, padded to a multiple
  of the world size and dealt out as ``order[rank::world]`` (as ``DistributedSampler`` does);
- the augmentation: with ``keys=True`` every item is a :class:`SampleKey` ``(index, seed)``
  whose seed depends on ``(seed, epoch, rank, position)``; a dataset that re-seeds its
  augmentation from the key draws the same flips, crops, mosaic partners ... for that position
  whichever worker process loads it and however many workers there are.

``set_epoch(epoch, start)`` starts the pass at position ``start`` of this rank's order, so a
resumed run skips the samples it already trained on without loading them. The sampler knows
nothing about the dataset except its length (detection and classification use it alike).
"""
from __future__ import annotations

from typing import Iterator, NamedTuple, Union

import numpy as np
from torch.utils.data import DistributedSampler

__all__ = ["SampleKey", "ResumableSampler", "split_key"]


class SampleKey(NamedTuple):
    """A dataset key: the item's index and the seed of its augmentation."""
    index: int
    seed: int


def split_key(key: Union[int, SampleKey, tuple]):
    """``(index, seed)`` of a key; ``seed`` is None for a plain integer index."""
    if isinstance(key, tuple):
        return int(key[0]), int(key[1])
    return int(key), None


class ResumableSampler(DistributedSampler):
    """Epoch-seeded order (+ per-sample seeds) for ``world_size`` ranks, resumable mid-epoch.

    A ``DistributedSampler`` (DDP tooling recognises it) that takes rank and world size as
    arguments, so it also works without a process group (``world_size=1``).

    Args:
        dataset: anything with ``len``.
        shuffle: a new permutation per epoch (else the dataset order).
        seed: the run's seed; order and sample seeds derive from it.
        rank, world_size: this process's share of each epoch.
        drop_last: drop the tail that does not divide among the ranks (else pad by repeating
            the start of the order, like ``DistributedSampler``).
        keys: yield :class:`SampleKey` ``(index, seed)`` instead of plain indices.
    """

    def __init__(self, dataset, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False, keys: bool = True):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        super().__init__(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle,
                         seed=int(seed), drop_last=drop_last)
        self.keys = keys
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """The next passes go over ``epoch``, beginning at position ``start`` of this rank's
        order (0 = the whole epoch; a resumed run passes ``batches_done * batch_size``)."""
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start {start} outside the epoch's {self.num_samples} samples")
        self.epoch = int(epoch)
        self.start = int(start)

    def order(self, epoch: int) -> np.ndarray:
        """This rank's dataset indices for ``epoch``, in order (the whole epoch)."""
        n = len(self.dataset)
        if self.shuffle:
            idx = np.random.default_rng([self.seed, int(epoch)]).permutation(n)
        else:
            idx = np.arange(n)
        if self.drop_last:
            idx = idx[:self.total_size]
        elif self.total_size > n:
            idx = np.concatenate([idx, np.resize(idx, self.total_size - n)])
        return idx[self.rank:self.total_size:self.num_replicas]

    def sample_seeds(self, epoch: int) -> np.ndarray:
        """The augmentation seed of every position of this rank's ``epoch``."""
        rng = np.random.default_rng([self.seed, int(epoch), self.rank, 0x5EED])
        return rng.integers(0, 2 ** 31, size=self.num_samples, dtype=np.int64)

    def __iter__(self) -> Iterator[Union[int, SampleKey]]:
        order = self.order(self.epoch)[self.start:]
        if not self.keys:
            return iter(order.tolist())
        seeds = self.sample_seeds(self.epoch)[self.start:]
        return iter([SampleKey(i, s) for i, s in zip(order.tolist(), seeds.tolist())])

    def __len__(self) -> int:
        """Samples in a whole epoch for this rank (also when a pass starts later)."""
        return self.num_samples
