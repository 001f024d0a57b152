"""Everything between files on disk and a training batch.

``load_data_config`` reads a data YAML, ``build_dataset`` scans a split (COCO JSON, YOLO
txt or Pascal VOC XML) into a :class:`DetectionDataset`, ``build_dataloader`` batches it. See docs/data.md.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

from .augment import TrainTransform, eval_transform  # noqa: F401
from ..config import ConfigError  # noqa: F401
from .config import (AugmentConfig, DataConfig, DatasetNotFoundError, GenerateConfig,  # noqa: F401
                     SplitConfig, check_split_exists, load_augment_config, load_data_config)
from .dataset import DetectionDataset  # noqa: F401
from .image_io import ImageReadError, read_image  # noqa: F401
from .labels import LabelError, ScanReport, collect_voc_names, scan_coco, scan_voc, scan_yolo, voc_pairs  # noqa: F401
from .records import ImageRecord, RecordStore  # noqa: F401
from .letterbox import letterbox, unletterbox_boxes  # noqa: F401
from .loader import (DetectionDataLoader, build_dataloader, collate, random_size,  # noqa: F401
                     rescale_batch)

log = logging.getLogger(__name__)


def prepare_data(data_cfg) -> DataConfig:
    """Load the data config and generate synthetic data on first use (``generate`` section)."""
    cfg = load_data_config(data_cfg)
    g = cfg.generate
    if g is not None and g.kind == "proxy":
        from .proxy import ensure_proxy
        ensure_proxy(cfg.root, g.num_train, g.num_val, g.img_size, g.seed, g.textures)
    elif g is not None:
        from .shapes import ensure_shapes
        ensure_shapes(cfg.root, g.num_train, g.num_val, g.img_size, g.seed)
    return cfg


def scan_split(data_cfg, split: str, strict: bool = True):
    """Scan a split's labels: returns (records, names, label_to_cat_id, ground truth or None,
    report); ``records`` is a :class:`RecordStore`. ``strict=False`` leaves the fatal label
    problems in ``report.errors`` instead of raising them (check_data reports them all)."""
    cfg = prepare_data(data_cfg)
    s = check_split_exists(cfg, split)
    if cfg.format == "coco":
        labels = scan_coco(s.annotations, s.images, cfg.names, strict=strict)
        return labels.records, labels.names, labels.cat_ids, labels.gt, labels.report
    if cfg.format == "voc":
        pairs, orphans = voc_pairs(s.images, s.annotations, s.list)
        labels = scan_voc(pairs, voc_class_names(cfg), orphans, cfg.difficult, strict=strict)
        return labels.records, labels.names, list(range(1, len(labels.names) + 1)), labels.gt, labels.report
    if not cfg.names:
        raise ConfigError(f"{cfg.source or 'data config'}: format 'yolo' needs 'names' (the class names)")
    labels = scan_yolo(s.images, s.labels, len(cfg.names), strict=strict)
    return labels.records, list(cfg.names), list(range(len(cfg.names))), None, labels.report


def voc_class_names(cfg: DataConfig) -> list:
    """The data config's names or, when it lists none, those found in every split's XMLs
    (sorted, so each split gets the same indices; logged once)."""
    if cfg.names:
        return list(cfg.names)
    splits = []
    for name in ("train", "val", "test"):
        if getattr(cfg, name) is not None:
            try:
                splits.append(check_split_exists(cfg, name))
            except DatasetNotFoundError:
                continue   # reported when that split is used
    names = collect_voc_names(voc_pairs(s.images, s.annotations, s.list)[0] for s in splits)
    if not names:
        raise ConfigError(f"{cfg.source or 'data config'}: no 'names' and no object in any XML")
    log.info("%s: no 'names' in the data config; %d classes found in the XMLs: %s",
             cfg.source or "data config", len(names), ", ".join(names))
    cfg.names = tuple(names)
    return names


def build_dataset(data_cfg, split: str, img_size: int,
                  augment: Union[AugmentConfig, dict, None] = None, cache: bool = False,
                  seed: int = 0) -> DetectionDataset:
    """A split as a :class:`DetectionDataset`; ``augment=None`` = evaluation (letterbox only)."""
    cfg = prepare_data(data_cfg)
    records, names, cat_ids, gt, report = scan_split(cfg, split)
    name = f"{Path(cfg.source).stem if cfg.source else 'data'}/{split}"
    report.log_summary(name)
    return DetectionDataset(records, names, cat_ids, img_size, augment=augment, cache=cache,
                            gt=gt, name=name, seed=seed)
