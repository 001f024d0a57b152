"""A split's per-image records in a few numpy arrays, so data loader workers share them.

A Python object per image (a record, its small box arrays, its path string) costs about a
kilobyte, and every forked worker that reads one writes its reference count, which copies the
memory page it sits on: one epoch copies the whole list into every worker (gigabytes at COCO
scale with 8 workers). Here a split is a handful of arrays whatever its size -- the boxes of
all images in one (N, 4) array with per-image offsets, the paths in one bytes buffer -- that
workers read without writing. A record is rebuilt on access (a few slices).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from dataclasses import dataclass
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np


@dataclass
class ImageRecord:
    """One image and its training boxes.

    ``boxes`` are xyxy, in pixels of the frame given by ``hw`` for COCO, or normalised to
    [0, 1] for YOLO txt (the image size is only known once the image is decoded).
    """
    path: str
    image_id: int
    boxes: np.ndarray                     # (n, 4) float32
    classes: np.ndarray                   # (n,) int64 contiguous class indices
    hw: Optional[Tuple[int, int]] = None  # (height, width) recorded by the labels (COCO)
    normalized: bool = False


class PackedStrings:
    """A read-only list of strings stored as one bytes buffer and an offsets array."""

    def __init__(self, strings: Iterable[str]):
        encoded = [os.fsencode(s) for s in strings]
        lengths = np.fromiter((len(b) for b in encoded), np.int64, len(encoded))
        self.offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.buffer = np.frombuffer(b"".join(encoded), np.uint8) if encoded else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} strings")
        i %= len(self)
        return os.fsdecode(self.buffer[self.offsets[i]:self.offsets[i + 1]].tobytes())

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    @property
    def nbytes(self) -> int:
        return int(self.buffer.nbytes + self.offsets.nbytes)


class RecordStore:
    """The records of a split as arrays; indexing gives an :class:`ImageRecord`.

    ``box_offsets[i]:box_offsets[i + 1]`` are image ``i``'s rows of ``boxes``/``classes``;
    ``hw`` is -1 where the labels record no image size (YOLO).
    """

    def __init__(self, paths: Sequence[str], image_ids, boxes, classes, counts,
                 hw=None, normalized=False):
        n = len(paths)
        self.paths = paths if isinstance(paths, PackedStrings) else PackedStrings(paths)
        self.image_ids = np.asarray(image_ids, np.int64).reshape(n)
        self.boxes = np.ascontiguousarray(boxes, np.float32).reshape(-1, 4)
        self.classes = np.ascontiguousarray(classes, np.int64).reshape(-1)
        counts = np.asarray(counts, np.int64).reshape(n)
        self.box_offsets = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=self.box_offsets[1:])
        if self.box_offsets[-1] != len(self.boxes) or len(self.boxes) != len(self.classes):
            raise ValueError(f"{len(self.boxes)} boxes and {len(self.classes)} classes for "
                             f"per-image counts that sum to {int(self.box_offsets[-1])}")
        self.hw = (np.full((n, 2), -1, np.int32) if hw is None
                   else np.asarray(hw, np.int32).reshape(n, 2))
        self.normalized = np.broadcast_to(np.asarray(normalized, bool), (n,)).copy()

    @classmethod
    def from_records(cls, records: Iterable[ImageRecord]) -> "RecordStore":
        records = list(records)
        empty_boxes, empty_classes = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        return cls([r.path for r in records], [r.image_id for r in records],
                   np.concatenate([np.asarray(r.boxes, np.float32).reshape(-1, 4) for r in records]
                                  or [empty_boxes]),
                   np.concatenate([np.asarray(r.classes, np.int64).reshape(-1) for r in records]
                                  or [empty_classes]),
                   [len(r.classes) for r in records],
                   [r.hw if r.hw is not None else (-1, -1) for r in records],
                   [r.normalized for r in records])

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> ImageRecord:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"record {i} out of range for {len(self)} records")
        i %= len(self)
        a, b = self.box_offsets[i], self.box_offsets[i + 1]
        h, w = (int(v) for v in self.hw[i])
        return ImageRecord(self.paths[i], int(self.image_ids[i]), self.boxes[a:b].copy(),
                           self.classes[a:b].copy(), None if h < 0 else (h, w),
                           bool(self.normalized[i]))

    def __iter__(self) -> Iterator[ImageRecord]:
        return (self[i] for i in range(len(self)))

    def num_boxes(self, i: int) -> int:
        return int(self.box_offsets[i + 1] - self.box_offsets[i])

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (the whole split)."""
        return int(self.paths.nbytes + sum(a.nbytes for a in (
            self.image_ids, self.boxes, self.classes, self.box_offsets, self.hw, self.normalized)))

    def tolist(self) -> List[ImageRecord]:
        return list(self)


def release_freed_memory() -> None:
    """Give the heap freed by a large scan (a parsed JSON) back to the OS (glibc ``malloc_trim``).

    Otherwise the freed pages stay mapped: forked workers inherit them as shared, and their
    allocator then writes into them, copying each one -- the copy-on-read cost again, for
    memory that holds nothing. No-op where the C library has no ``malloc_trim``.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


_fork_hook_installed = False
_unfreeze_after_fork = []


def _freeze_before_fork() -> None:
    _unfreeze_after_fork.append(gc.get_freeze_count() == 0)  # leave a caller's own freeze alone
    gc.freeze()


def _unfreeze_in_parent() -> None:
    if _unfreeze_after_fork and _unfreeze_after_fork.pop():
        gc.unfreeze()


def _forget_in_child() -> None:
    _unfreeze_after_fork.clear()


def freeze_objects_across_fork() -> None:
    """A forked data loader worker starts with every inherited object frozen (``gc.freeze``).

    The cyclic garbage collector writes into the header of every object it examines, so the
    first full collection in a worker copies every page of Python objects it inherited (the
    interpreter's, torch's, the dataset's): ~55 MB per worker, measured in
    ``benchmarks/dataset_memory.py``. Frozen objects are never examined. The parent unfreezes
    right after the fork, so its own collection is unchanged. Installed once per process.
    """
    global _fork_hook_installed
    if not _fork_hook_installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(before=_freeze_before_fork, after_in_parent=_unfreeze_in_parent,
                            after_in_child=_forget_in_child)
        _fork_hook_installed = True
