"""A detection dataset over scanned records: decoding, RAM cache, augmentation, bad images.

Mosaic partners are random images of the split, drawn from the item's seed (so a sample is the
same whichever worker loads it); a buffer of recently decoded images (per worker) saves
decoding the ones seen lately, and the RAM cache saves all decoding.

An image that cannot be decoded at load time (corrupt, truncated) never stops training: in
training the sample is replaced by another image (logged, and reported per epoch by the data
loader); in evaluation a grey placeholder marked ``meta["unreadable"]`` keeps the batch
whole, and the evaluator leaves that image out of the score and counts it.
"""
from __future__ import annotations

import contextlib
import io
import logging
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import TrainTransform, eval_transform, mixup, resize_long_side
from .config import AugmentConfig, DatasetNotFoundError, load_augment_config
from .image_io import ImageReadError, read_image
from .labels import yolo_ground_truth
from .letterbox import PAD_VALUE, letterbox_params, padded_size
from .records import ImageRecord, RecordStore, freeze_objects_across_fork

log = logging.getLogger(__name__)


class DetectionDataset(Dataset):
    """Items are dicts ``image`` (3, H, W) uint8 RGB, ``targets`` (n, 5) float32
    ``[class, x1, y1, x2, y2]`` in input pixels, ``meta`` and ``skipped`` (paths replaced)."""

    def __init__(self, records: Union[RecordStore, Sequence[ImageRecord]], names: Sequence[str],
                 label_to_cat_id: Sequence[int], img_size: int,
                 augment: Optional[AugmentConfig] = None, cache: bool = False,
                 gt=None, name: str = "dataset", seed: int = 0,
                 buffer_size: int = 128):
        if not len(records):
            raise DatasetNotFoundError(f"{name}: no usable images (see the warnings above)")
        # arrays, not a list of objects: workers share them without copying (records.py)
        self.records = records if isinstance(records, RecordStore) else RecordStore.from_records(records)
        freeze_objects_across_fork()
        self.names = list(names)
        self.label_to_cat_id = list(label_to_cat_id)
        self.img_size = int(img_size)
        self.name = name
        self._gt_dict = gt
        self._coco = None
        self._bad: set = set()
        self.buffer_size = int(buffer_size)  # per worker: recent resized images for mosaic
        self._buffer: "OrderedDict[int, tuple]" = OrderedDict()
        self.rng = np.random.default_rng(seed)
        self.augment: Optional[AugmentConfig] = None
        self.transform: Optional[TrainTransform] = None
        self.set_augment(augment, seed=seed)
        self._cache: Optional[List[Optional[Tuple[np.ndarray, Tuple[int, int], float]]]] = None
        if cache:
            self.cache_images()

    # ------------------------------------------------------------------ configuration
    def set_augment(self, augment, seed: Optional[int] = None) -> None:
        """Switch the training augmentation (None = evaluation letterbox) without re-scanning.

        Persistent data loader workers hold their own copy: rebuild the loader afterwards.
        """
        self._buffer = OrderedDict()
        self.augment = None if augment is None else load_augment_config(augment)
        if self.augment is None:
            self.transform = None
        else:
            seed = int(self.rng.integers(2 ** 31)) if seed is None else seed
            self.transform = TrainTransform(self.img_size, self.augment, seed=seed)

    def reseed(self, seed: int) -> None:
        """Re-seed every random choice (called per data loader worker with its own seed)."""
        self.rng = np.random.default_rng(seed)
        if self.transform is not None:
            self.transform.reseed(seed % (2 ** 31))

    def __len__(self) -> int:
        return len(self.records)

    # ------------------------------------------------------------------ ground truth
    def coco_gt(self):
        """This split's ground truth as a ``pycocotools.coco.COCO`` (crowd boxes included)."""
        if self._coco is None:
            from pycocotools.coco import COCO
            gt = self._gt_dict
            gt = self._yolo_gt() if gt is None else gt.to_dict() if hasattr(gt, "to_dict") else gt
            coco = COCO()
            coco.dataset = gt
            with contextlib.redirect_stdout(io.StringIO()):
                coco.createIndex()
            self._coco = coco
        return self._coco

    def _yolo_gt(self) -> dict:
        return yolo_ground_truth(self.records, self.names, self.label_to_cat_id, self.name)

    # ------------------------------------------------------------------ loading
    def load_image(self, index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decoded RGB image and its boxes (xyxy, image pixels) and classes; may raise
        :class:`ImageReadError`."""
        rec = self.records[index]
        img = read_image(rec.path, expected_hw=rec.hw)
        h, w = img.shape[:2]
        boxes = rec.boxes.copy()
        if rec.normalized:
            boxes *= np.array([w, h, w, h], np.float32)
        elif rec.hw is not None and (h, w) != tuple(rec.hw) and len(boxes):
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if index not in self._bad:
                log.warning("%s: %s is %dx%d but its labels say %dx%d; boxes clipped", self.name,
                            rec.path, w, h, rec.hw[1], rec.hw[0])
            return img, boxes[keep], rec.classes[keep]
        return img, boxes, rec.classes.copy()

    def load_resized(self, index: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Tuple[int, int], float]:
        """Image resized to long side ``img_size`` (from the RAM cache when there is one),
        its boxes in that frame, classes, the original (h, w) and the resize ratio."""
        if self._cache is not None:
            entry = self._cache[index]
            if entry is None:
                raise ImageReadError(f"{self.records[index].path}: unreadable (found while caching)")
            img, orig_hw, r = entry
            boxes, classes = self._boxes_for(index, orig_hw)
        else:
            img, boxes, classes = self.load_image(index)
            orig_hw = img.shape[:2]
            img, r = resize_long_side(img, self.img_size, fast=self.augment is not None)
        return img, boxes * r, classes, tuple(orig_hw), r

    def _boxes_for(self, index: int, hw: Tuple[int, int]):
        rec = self.records[index]
        boxes = rec.boxes.copy()
        if rec.normalized:
            boxes *= np.array([hw[1], hw[0], hw[1], hw[0]], np.float32)
        return boxes, rec.classes.copy()

    def cache_images(self, threads: int = 4) -> None:
        """Decode every image once, resized to long side ``img_size``, and keep it in RAM."""
        from tqdm import tqdm

        def load(i):
            try:
                img, _, _ = self.load_image(i)
            except ImageReadError as e:
                log.warning("%s: skipping unreadable image %s", self.name, e)
                return None
            orig_hw = img.shape[:2]
            img, r = resize_long_side(img, self.img_size, fast=self.augment is not None)
            return img, orig_hw, r

        with ThreadPoolExecutor(max(1, threads)) as pool:
            cache = list(tqdm(pool.map(load, range(len(self))), total=len(self),
                              desc=f"caching {self.name}", unit="img", leave=False))
        self._bad.update(i for i, c in enumerate(cache) if c is None)
        mb = sum(c[0].nbytes for c in cache if c is not None) / 2 ** 20
        log.info("%s: cached %d images (%.0f MB)", self.name, len(cache) - len(self._bad), mb)
        self._cache = cache

    # ------------------------------------------------------------------ items
    def __getitem__(self, index) -> Dict[str, Any]:
        if isinstance(index, tuple):  # (index, seed) key of a ResumableSampler: the item's
            index, seed = index       # augmentation depends on the key, not on the worker
            self.reseed(int(seed))
        skipped: List[str] = []
        if self.transform is None:
            return self._eval_item(index, skipped)
        for _ in range(len(self)):
            try:
                (img, boxes, classes), orig_hw = self._train_sample(index, skipped)
                if self.augment.mixup > 0 and self.rng.random() < self.augment.mixup:
                    other, _ = self._train_sample(self._random_good_index(), skipped)
                    img, boxes, classes = mixup((img, boxes, classes), other, self.rng,
                                                self.augment.mixup_alpha)
                break
            except ImageReadError as e:
                self._mark_bad(index, e, skipped)
                index = self._random_good_index()
        else:
            raise ImageReadError(f"{self.name}: no readable image left (check it with `cspdet check-data`)")
        return self._item(index, img, boxes, classes, self._eval_params(orig_hw), skipped)

    def _train_sample(self, index: int, skipped: List[str]):
        use_buffer = self._cache is None and self.buffer_size > 0 and self.augment.mosaic > 0
        primary, orig_hw = self._buffered_sample(index, use_buffer)
        partners = None
        if self.augment.mosaic > 0 and self.rng.random() < self.augment.mosaic:
            partners = []  # random indices (not buffer entries): a function of the seed only
            others = [k for k in self._buffer if k != index] if use_buffer else []
            if self.augment.mosaic_partners == "buffer" and len(others) >= 3:
                # opt-in speed: decoded images of this worker, so nothing more is decoded
                picks = self.rng.choice(len(others), 3, replace=False)
                partners = [self._buffered_sample(others[int(k)], True)[0] for k in picks]
            while len(partners) < 3:
                j = self._random_good_index()
                try:
                    partners.append(self._buffered_sample(j, use_buffer)[0])
                except ImageReadError as e:
                    self._mark_bad(j, e, skipped)
        return self.transform(primary, partners), orig_hw

    def _buffered_sample(self, index: int, use_buffer: bool):
        """(image, boxes, classes) resized to ``img_size``, and the original (h, w).

        With mosaic on (and no RAM cache) the last ``buffer_size`` resized images stay in a
        per-worker buffer (a decode cache, as in Ultralytics): an image still in it is not
        decoded again. Samples are never modified in place,
        so a buffered entry stays valid.
        """
        if use_buffer and index in self._buffer:
            self._buffer.move_to_end(index)
            return self._buffer[index]
        img, boxes, classes, orig_hw, _ = self.load_resized(index)
        entry = ((img, boxes, classes), orig_hw)
        if use_buffer:
            self._buffer[index] = entry
            while len(self._buffer) > self.buffer_size:
                self._buffer.popitem(last=False)
        return entry

    def _eval_item(self, index: int, skipped: List[str]) -> Dict[str, Any]:
        try:
            if self._cache is not None:
                img, boxes, classes, orig_hw, r = self.load_resized(index)
            else:
                img, boxes, classes = self.load_image(index)
                orig_hw, r = img.shape[:2], 1.0
            img, boxes, ratio, pad = eval_transform(img, boxes, self.img_size)
            return self._item(index, img, boxes, classes,
                              (tuple(orig_hw), ratio * r, pad), skipped)
        except ImageReadError as e:
            self._mark_bad(index, e, skipped)
            rec = self.records[index]
            orig_hw = tuple(rec.hw) if rec.hw else (self.img_size, self.img_size)
            size = padded_size(self.img_size)
            img = np.full((size, size, 3), PAD_VALUE, np.uint8)
            empty = np.zeros((0, 4), np.float32)
            return self._item(index, img, empty, np.zeros(0, np.int64), (orig_hw, 1.0, (0.0, 0.0)),
                              skipped, unreadable=True)

    def _eval_params(self, orig_hw):
        """Letterbox params the evaluation transform would use for an image (for the meta)."""
        ratio, pad = letterbox_params(orig_hw, self.img_size)
        return (int(orig_hw[0]), int(orig_hw[1])), ratio, pad

    def _item(self, index, img, boxes, classes, params, skipped, unreadable=False):
        orig_hw, ratio, pad = params
        rec = self.records[index]
        targets = np.concatenate([classes.reshape(-1, 1).astype(np.float32),
                                  boxes.reshape(-1, 4).astype(np.float32)], 1)
        meta = {"image_id": rec.image_id, "path": rec.path, "orig_shape": tuple(int(v) for v in orig_hw),
                "ratio": float(ratio), "pad": (float(pad[0]), float(pad[1]))}
        if unreadable:
            meta["unreadable"] = True
        image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        return {"image": image, "targets": torch.from_numpy(targets), "meta": meta, "skipped": skipped}

    def _mark_bad(self, index: int, error: Exception, skipped: List[str]) -> None:
        path = self.records[index].path
        if index not in self._bad:
            log.warning("%s: skipping unreadable image: %s", self.name, error)
        self._bad.add(index)
        skipped.append(path)

    def _random_good_index(self) -> int:
        if len(self._bad) >= len(self):
            raise ImageReadError(f"{self.name}: every image is unreadable (check it with `cspdet check-data`)")
        while True:
            j = int(self.rng.integers(len(self)))
            if j not in self._bad:
                return j
