"""Data and augmentation config sections.

A data YAML (``configs/data/*.yaml``) names the class names, the train and val sources and
their format. Relative paths in it resolve against the folder of the YAML itself (not the
working directory), so a data YAML keeps working wherever the command is started from.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, Union

from ..config import ConfigError, PathOrDict, find_config, from_dict, load_yaml

FORMATS = ("coco", "yolo", "voc")
SPLITS = ("train", "val", "test")
DIFFICULT_MODES = ("ignore", "train")


class DatasetNotFoundError(FileNotFoundError):
    """A data YAML points at files that are not there; the message says how to get them."""


@dataclass
class SplitConfig:
    """One split: an images folder and, for COCO, the instances JSON.

    For the YOLO layout the labels folder defaults to the images path with its last
    ``images`` component replaced by ``labels`` (``images/train2017`` -> ``labels/train2017``).
    For Pascal VOC, ``annotations`` is the XML folder and ``list`` a file of image ids (the
    VOCdevkit's ``ImageSets/Main/<split>.txt``); a split given as a ``.txt`` path is such a
    list (images in ``JPEGImages/``, XMLs in ``Annotations/`` beside ``ImageSets/``), one
    given as a folder holds its images and XMLs side by side (or ``JPEGImages/`` and
    ``Annotations/`` inside it).
    """
    images: str = ""
    annotations: str = ""
    labels: str = ""
    list: str = ""


GENERATORS = ("shapes", "proxy")


@dataclass
class GenerateConfig:
    """Synthetic data generated on first use.

    kind: ``shapes`` (the quick start, :mod:`detector.data.shapes`) or ``proxy`` (the harder
        ablation set, :mod:`detector.data.proxy`).
    textures (proxy only): photos for backgrounds and fills -- ``auto`` (the coco128 images
        when present, else procedural), ``none`` (procedural) or a folder of images. What was
        used is part of the cache folder's hash.
    """
    kind: str = "shapes"
    num_train: int = 1500
    num_val: int = 200
    img_size: int = 320
    seed: int = 0
    textures: str = "auto"
    # where to generate; empty = $CSPDET_CACHE_DIR or ~/.cache/cspdet, in <kind>-<params hash>
    cache_dir: str = ""

    def __post_init__(self):
        if self.kind not in GENERATORS:
            raise ConfigError(f"data.generate.kind must be one of {', '.join(GENERATORS)}, "
                              f"got '{self.kind}'")
        for key in ("num_train", "num_val", "img_size"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"data.generate.{key} must be >= 1, got {getattr(self, key)}")


@dataclass
class DataConfig:
    names: Tuple[str, ...] = ()
    train: Any = None          # SplitConfig, or a string = images folder (VOC: or an id list)
    val: Any = None
    test: Any = None
    format: str = "yolo"
    difficult: str = "ignore"  # VOC `difficult` objects: ignore (VOC's rule) | train (targets too)
    root: str = ""             # base of train/val; relative = against the YAML's folder
    generate: Optional[GenerateConfig] = None
    download: str = ""         # text shown when the data is missing (where to get it)
    source: str = ""           # the YAML the config came from ("" for a dict)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ConfigError(f"data.format must be one of {FORMATS}, got '{self.format}'")
        if self.difficult not in DIFFICULT_MODES:
            raise ConfigError(f"data.difficult must be one of {DIFFICULT_MODES}, got '{self.difficult}'")
        self.names = tuple(str(n) for n in (self.names or ()))
        if self.generate is not None:
            self.generate = from_dict(GenerateConfig, self.generate, "data.generate")
        for split in SPLITS:
            value = getattr(self, split)
            if value is None:
                continue
            if isinstance(value, (str, os.PathLike)):
                value = (SplitConfig(list=str(value)) if self.format == "voc" and str(value).endswith(".txt")
                         else SplitConfig(images=str(value)))
            else:
                value = from_dict(SplitConfig, value, f"data.{split}")
            if self.format == "coco" and not value.annotations:
                raise ConfigError(f"data.{split}: format 'coco' needs 'annotations' "
                                  f"(the instances JSON) beside 'images'")
            if not value.images and not (self.format == "voc" and value.list):
                raise ConfigError(f"data.{split}: needs 'images' (the images folder)"
                                  + (" or 'list' (an ImageSets id list)" if self.format == "voc" else ""))
            setattr(self, split, value)

    def split(self, name: str) -> SplitConfig:
        if name not in SPLITS:
            raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got '{name}'")
        value = getattr(self, name)
        if value is None:
            raise ConfigError(f"data config {self.source or '(dict)'} has no '{name}' split")
        return value


@dataclass
class AugmentConfig:
    """Training augmentation (the training config's ``train.augment`` section).

    Defaults follow the YOLOv5/v8 recipe. ``scale`` is the range of the object scale factor
    relative to the image resized to the input size; ``translate`` a fraction of the input size
    (single-image path; a mosaic's crop position is random anyway). ``hsv_*`` are the maximal
    relative hue shift (fraction of the colour circle), saturation and value gains.
    ``min_box_size`` (input pixels) and ``min_visibility`` (fraction of a box's area left inside
    the crop) drop boxes that augmentation cut down to slivers. ``mosaic_partners``: ``seeded``
    (default) draws a mosaic's three partners from the whole split with the sample's seed, so a
    run resumes and repeats exactly whatever the workers; ``buffer`` draws them among the images
    the worker decoded last (no extra decoding, faster on large uncached datasets, but a sample
    then depends on which worker made it: not exact on resume or with another worker count).
    """
    mosaic: float = 1.0
    mosaic_partners: str = "seeded"
    mixup: float = 0.0
    mixup_alpha: float = 32.0
    scale: Tuple[float, float] = (0.5, 1.5)
    translate: float = 0.1
    hsv_h: float = 0.015
    hsv_s: float = 0.7
    hsv_v: float = 0.4
    fliplr: float = 0.5
    min_box_size: float = 2.0
    min_visibility: float = 0.1

    def __post_init__(self):
        self.scale = tuple(float(s) for s in self.scale)
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"augment.scale must be (min, max) with 0 < min <= max, got {self.scale}")
        if self.mosaic_partners not in ("seeded", "buffer"):
            raise ConfigError(f"augment.mosaic_partners is 'seeded' (exact resume) or 'buffer' "
                              f"(faster, not exact), got '{self.mosaic_partners}'")
        for name in ("mosaic", "mixup", "fliplr", "min_visibility", "hsv_h", "hsv_s", "hsv_v"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"augment.{name} is a probability/fraction in [0, 1], got {value}")


def load_augment_config(d: Union[Mapping[str, Any], AugmentConfig, None]) -> AugmentConfig:
    return from_dict(AugmentConfig, d, "train.augment")


def load_data_config(cfg: Union[PathOrDict, DataConfig], base_dir: Union[str, os.PathLike, None] = None
                     ) -> DataConfig:
    """Read a data YAML (path or dict) into a :class:`DataConfig` with absolute paths.

    Relative ``root`` and split paths resolve against the YAML's folder; for a dict, against
    ``base_dir`` (or its ``_source`` key as set by :func:`detector.config.load_config`, or the
    working directory).
    """
    if isinstance(cfg, DataConfig):
        return cfg
    source = ""
    if isinstance(cfg, Mapping):
        data = dict(cfg)
        source = str(data.pop("_source", "") or "")
        if base_dir is None:
            base_dir = Path(source).parent if source else Path.cwd()
    else:
        path = find_config(cfg)
        source = str(path)
        data = load_yaml(path)
        data.pop("_source", None)
        base_dir = path.resolve().parent
    data_cfg = from_dict(DataConfig, data, "data")
    data_cfg.source = source
    return _resolve_paths(data_cfg, Path(base_dir))


def _resolve_paths(cfg: DataConfig, base_dir: Path) -> DataConfig:
    if cfg.generate is not None:
        root = Path(cfg.root) if cfg.root else _shapes_cache_dir(cfg.generate)
    else:
        root = Path(cfg.root) if cfg.root else Path(".")
    root = Path(os.path.expanduser(str(root)))
    if not root.is_absolute():
        root = (base_dir / root)
    cfg.root = str(Path(os.path.normpath(root)))
    for split in SPLITS:
        value = getattr(cfg, split)
        if value is None:
            continue
        for key in ("images", "annotations", "labels", "list"):
            path = getattr(value, key)
            if path:
                setattr(value, key, os.path.normpath(os.path.join(cfg.root, os.path.expanduser(path))))
        if cfg.format == "yolo" and not value.labels:
            value.labels = str(yolo_labels_dir(Path(value.images)))
        if cfg.format == "voc":
            _voc_defaults(value)
    return cfg


def _voc_defaults(split: SplitConfig) -> None:
    """VOCdevkit: ``<base>/ImageSets/Main/x.txt`` lists ids of ``<base>/JPEGImages`` and
    ``<base>/Annotations``; a folder holding both sub-folders is read through them; any other
    folder holds images and XMLs side by side."""
    if split.list:
        lst = Path(split.list)
        base = lst.parents[2] if lst.parent.name == "Main" and lst.parent.parent.name == "ImageSets" \
            else lst.parent
        split.images = split.images or str(base / "JPEGImages")
        split.annotations = split.annotations or str(base / "Annotations")
        return
    folder = Path(split.images)
    if not split.annotations and (folder / "JPEGImages").is_dir() and (folder / "Annotations").is_dir():
        split.images, split.annotations = str(folder / "JPEGImages"), str(folder / "Annotations")
    split.annotations = split.annotations or split.images


def yolo_labels_dir(images_dir: Path) -> Path:
    """``.../images/train2017`` -> ``.../labels/train2017`` (the last ``images`` component)."""
    parts = list(images_dir.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return images_dir.parent / "labels"


def shapes_params_hash(gen: GenerateConfig) -> str:
    """Hash of what decides the generated files: the counts, size, seed, generator version
    and, for ``proxy``, which textures (``procedural`` or the photos' names and sizes)."""
    params = {k: v for k, v in dataclasses.asdict(gen).items()
              if k not in ("cache_dir", "kind", "textures")}
    if gen.kind == "proxy":
        from .proxy import GENERATOR_VERSION, resolve_textures, texture_key
        params["kind"] = "proxy"
        params["textures"] = texture_key(*resolve_textures(gen.textures))
    else:  # the shapes hash is what it was before `kind` existed: caches stay valid
        from .shapes import GENERATOR_VERSION
    params["version"] = GENERATOR_VERSION
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]


def default_cache_root() -> Path:
    env = os.environ.get("CSPDET_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cspdet"


def _shapes_cache_dir(gen: GenerateConfig) -> Path:
    base = Path(os.path.expanduser(gen.cache_dir)) if gen.cache_dir else default_cache_root()
    return base / f"{gen.kind}-{shapes_params_hash(gen)}"


def check_split_exists(cfg: DataConfig, split: str) -> SplitConfig:
    """Raise :class:`DatasetNotFoundError` (with where-to-get-it text) if a split is missing."""
    s = cfg.split(split)
    missing = [p for p in (s.images, s.annotations, s.list) if p and not Path(p).exists()]
    if missing:
        msg = (f"dataset files not found for split '{split}' of {cfg.source or 'the data config'}: "
               + ", ".join(missing))
        if cfg.download:
            msg += "\n" + cfg.download.strip()
        raise DatasetNotFoundError(msg)
    return s
