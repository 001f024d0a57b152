"""ImageFolder data for classification: datasets, transforms and loaders.

Images come out as uint8 (3, H, W) RGB tensors; the trainer scales them to [0, 1], the input
range of every cspdet model (no mean / std), so a classifier trained here is a backbone the
detector can start from as it is.

Training augmentation is torchvision's (RandomResizedCrop, flip, colour jitter), run under a
seed that comes with each sample key from :class:`detector.data.sampler.ResumableSampler`: the
crops and flips of an epoch are a function of ``(seed, epoch, rank, position)`` only, whichever
worker loads the image, so a resumed run sees exactly the batches an uninterrupted one does.
"""
from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets
from torchvision.transforms import v2

from ..common import PathNotFoundError
from ..config import ConfigError
from ..data.sampler import ResumableSampler, split_key
from .config import ClsAugmentConfig, ClsDataConfig

log = logging.getLogger(__name__)


def resolve_root(cfg: ClsDataConfig) -> Path:
    """The ImageFolder root: ``data.root``, or the synthetic data (generated on first use)."""
    if cfg.synthetic is not None:
        from .synthetic import ensure_synthetic
        return ensure_synthetic(cfg.synthetic)
    return Path(cfg.root).expanduser()


def split_dir(cfg: ClsDataConfig, split: str) -> Path:
    root = resolve_root(cfg)
    folder = root / (cfg.train if split == "train" else cfg.val)
    if not folder.is_dir():
        raise ConfigError(f"data split '{split}' not found: {folder} is not a folder (an ImageFolder "
                          f"root holds {cfg.train}/<class>/ and {cfg.val}/<class>/ image folders)")
    return folder


def train_transform(img_size: int, aug: ClsAugmentConfig):
    ops = [v2.RandomResizedCrop(img_size, scale=aug.scale, ratio=aug.ratio, antialias=True)]
    if aug.hflip > 0:
        ops.append(v2.RandomHorizontalFlip(aug.hflip))
    if aug.color_jitter > 0:
        j = aug.color_jitter
        ops.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    return v2.Compose(ops + [v2.PILToTensor()])


def eval_transform(img_size: int, crop_pct: float = 0.875):
    """Short side to ``img_size / crop_pct``, centre crop ``img_size`` (timm's eval transform)."""
    resize = int(round(img_size / crop_pct))
    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(img_size), v2.PILToTensor()])


class ImageFolderDataset(Dataset):
    """torchvision's ImageFolder listing with cspdet's key protocol.

    ``dataset[i]`` or ``dataset[SampleKey(i, seed)]`` -> ``(uint8 image (3, H, W), label)``; with
    a seed the random transform runs under it (in a forked RNG, so the caller's stream is
    untouched). An unreadable image is logged and replaced by the next readable one.
    """

    def __init__(self, root, transform, names: Optional[List[str]] = None):
        root = Path(root)
        if not root.is_dir():
            raise PathNotFoundError(f"image folder not found: {root}")
        try:
            folder = datasets.ImageFolder(str(root))
        except FileNotFoundError as e:  # torchvision's word for a tree with no class folder / image
            raise ConfigError(f"{root}: {e} (expected one sub-folder of images per class)") from e
        if names is not None and list(folder.classes) != list(names):
            missing = sorted(set(names) - set(folder.classes))
            extra = sorted(set(folder.classes) - set(names))
            raise ConfigError(f"{root}: class folders differ from the training split's "
                              f"(missing: {missing[:5] or 'none'}, extra: {extra[:5] or 'none'})")
        self.root, self.transform = root, transform
        self.names: List[str] = list(folder.classes)
        self.samples: List[Tuple[str, int]] = list(folder.samples)
        self.targets = [t for _, t in self.samples]
        self._loader = folder.loader

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key):
        index, seed = split_key(key)
        for attempt in range(len(self.samples)):
            path, label = self.samples[(index + attempt) % len(self.samples)]
            try:
                img = self._loader(path)
                break
            except Exception as e:  # a corrupt file must not end a long run
                log.warning("unreadable image skipped: %s (%s)", path, e)
        else:
            raise RuntimeError(f"no readable image in {self.root}")
        if seed is None:
            return self.transform(img), label
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(img), label


def _worker_init(worker_id: int) -> None:
    # one thread per worker (workers are the parallelism); Ctrl-C goes to the main process,
    # which writes last.pt and shuts the workers down
    torch.set_num_threads(1)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def build_train_loader(dataset, batch_size: int, workers: int, seed: int, rank: int = 0,
                       world_size: int = 1) -> DataLoader:
    """Shuffled, resumable loader (``loader.sampler.set_epoch(epoch, start)``); full batches."""
    sampler = ResumableSampler(dataset, shuffle=True, seed=seed, rank=rank, world_size=world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      drop_last=True, pin_memory=torch.cuda.is_available(),
                      persistent_workers=workers > 0, worker_init_fn=_worker_init,
                      prefetch_factor=4 if workers > 0 else None)


def build_eval_loader(dataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), worker_init_fn=_worker_init)


def build_datasets(cfg: ClsDataConfig, img_size: int, aug: ClsAugmentConfig):
    """(train, val) datasets; the val split must hold the same class folders."""
    train = ImageFolderDataset(split_dir(cfg, "train"), train_transform(img_size, aug))
    val = ImageFolderDataset(split_dir(cfg, "val"), eval_transform(img_size, cfg.crop_pct),
                             names=train.names)
    return train, val
