"""Convert a dataset from any supported layout (COCO JSON, YOLO txt, Pascal VOC XML) to any other.

Every split is read by the same reader training uses (so the same problems are dropped and
reported), turned into one COCO-style description (images with their paths, boxes in
continuous pixel xywh, ``iscrowd`` for crowd and VOC-difficult boxes), then written by the
target format's writer with its images (hard-linked when the file system allows, else
copied) and a data YAML that trains on it. Ignore regions have no YOLO form: they are left out
of YOLO labels and counted.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import yaml

from .config import SPLITS, DataConfig

log = logging.getLogger(__name__)

TARGETS = ("coco", "yolo", "voc")


@dataclass
class SplitData:
    """One split as images (``path``, ``file`` = name relative to the split's images folder,
    ``width``, ``height``, ``id``) and COCO annotations (``image_id``, ``category_id``,
    ``bbox`` xywh, ``iscrowd``)."""
    name: str
    images: List[dict]
    annotations: List[dict]
    categories: List[dict]          # sorted by id; contiguous class = position


@dataclass
class ConvertResult:
    data_yaml: Path
    images: Dict[str, int] = field(default_factory=dict)       # split -> images written
    boxes: Dict[str, int] = field(default_factory=dict)        # split -> boxes written
    left_out: Dict[str, int] = field(default_factory=dict)     # split -> ignore regions not written


def read_split(cfg: DataConfig, split: str) -> SplitData:
    """A split of any format as :class:`SplitData` (read by the training reader, strict)."""
    from . import scan_split
    from .labels import yolo_ground_truth

    records, names, cat_ids, gt, report = scan_split(cfg, split)
    report.log_summary(f"{Path(cfg.source).stem if cfg.source else 'data'}/{split}")
    coco = yolo_ground_truth(records, names, cat_ids, split) if gt is None else gt.to_dict()
    path_of = {int(i): p for i, p in zip(records.image_ids, records.paths)}
    images_root = cfg.split(split).images
    images = []
    for im in coco["images"]:
        path = path_of[int(im["id"])]
        rel = os.path.relpath(path, images_root) if images_root else Path(path).name
        images.append({**im, "path": path, "file": rel if not rel.startswith("..") else Path(path).name})
    categories = sorted(coco["categories"], key=lambda c: int(c["id"]))
    return SplitData(split, images, coco["annotations"], categories)


def _place_image(src: str, dst: Path) -> None:
    """Hard link (no extra disk) when possible, else copy; an existing identical file stays."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if os.path.samefile(src, dst) or dst.stat().st_size == os.stat(src).st_size:
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _by_image(data: SplitData) -> Dict[int, List[dict]]:
    out: Dict[int, List[dict]] = {int(im["id"]): [] for im in data.images}
    for a in data.annotations:
        out.setdefault(int(a["image_id"]), []).append(a)
    return out


def _names(data: SplitData) -> List[str]:
    return [str(c["name"]) for c in data.categories]


# ------------------------------------------------------------------------------------ writers
def write_coco(splits: Sequence[SplitData], out: Path, result: ConvertResult) -> dict:
    """``images/<split>/...`` and ``annotations/instances_<split>.json``."""
    yaml_splits = {}
    for data in splits:
        for im in data.images:
            _place_image(im["path"], out / "images" / data.name / im["file"])
        doc = {"images": [{"id": im["id"], "file_name": im["file"], "width": im["width"],
                           "height": im["height"]} for im in data.images],
               "annotations": [{**a, "id": k} for k, a in enumerate(data.annotations, 1)],
               "categories": data.categories}
        ann_path = out / "annotations" / f"instances_{data.name}.json"
        ann_path.parent.mkdir(parents=True, exist_ok=True)
        ann_path.write_text(json.dumps(doc))
        result.images[data.name], result.boxes[data.name] = len(data.images), len(data.annotations)
        yaml_splits[data.name] = {"images": f"images/{data.name}",
                                  "annotations": f"annotations/instances_{data.name}.json"}
    return yaml_splits


def write_yolo(splits: Sequence[SplitData], out: Path, result: ConvertResult) -> dict:
    """``images/<split>/x.jpg`` and ``labels/<split>/x.txt`` (``class cx cy w h``, normalised;
    an empty file for a background image); crowd / difficult boxes are left out."""
    yaml_splits = {}
    for data in splits:
        index = {int(c["id"]): k for k, c in enumerate(data.categories)}
        anns, left_out, written = _by_image(data), 0, 0
        for im in data.images:
            _place_image(im["path"], out / "images" / data.name / im["file"])
            w, h, lines = float(im["width"]), float(im["height"]), []
            for a in anns[int(im["id"])]:
                if a.get("iscrowd"):
                    left_out += 1
                    continue
                x, y, bw, bh = (float(v) for v in a["bbox"])
                lines.append(f"{index[int(a['category_id'])]} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} "
                             f"{bw / w:.6f} {bh / h:.6f}")
            label = (out / "labels" / data.name / im["file"]).with_suffix(".txt")
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text("".join(line + "\n" for line in lines))
            written += len(lines)
        result.images[data.name], result.boxes[data.name] = len(data.images), written
        result.left_out[data.name] = left_out
        yaml_splits[data.name] = f"images/{data.name}"
    return yaml_splits


def _coord(value: float) -> str:
    """A VOC coordinate: integers as integers, others to 0.01 px (as CVAT writes them)."""
    return f"{round(value, 2):g}" if abs(value - round(value)) > 1e-6 else str(int(round(value)))


def voc_xml(im: dict, anns: List[dict], names: Dict[int, str]) -> bytes:
    """One image's VOC XML (1-based inclusive corners: continuous ``[x1, x2]`` -> ``x1 + 1 .. x2``)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = Path(im["file"]).name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", im["width"]), ("height", im["height"]), ("depth", 3)):
        ET.SubElement(size, tag).text = str(int(value))
    ET.SubElement(root, "segmented").text = "0"
    for a in anns:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = names[int(a["category_id"])]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "1" if a.get("iscrowd") else "0"
        x, y, w, h = (float(v) for v in a["bbox"])
        box = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
            ET.SubElement(box, tag).text = _coord(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8")


def write_voc(splits: Sequence[SplitData], out: Path, result: ConvertResult) -> dict:
    """The VOCdevkit layout: ``JPEGImages/``, ``Annotations/`` and ``ImageSets/Main/<split>.txt``.
    Splits share the two folders; an image name used by two different files gets its split's
    name as a prefix. Crowd boxes become ``difficult`` objects (ignore regions)."""
    owner: Dict[str, str] = {}
    yaml_splits = {}
    for data in splits:
        names = {int(c["id"]): str(c["name"]) for c in data.categories}
        anns, ids = _by_image(data), []
        for im in data.images:
            stem = str(Path(im["file"]).with_suffix(""))
            if owner.setdefault(stem, im["path"]) != im["path"]:
                stem = f"{data.name}_{stem}"
            suffix = Path(im["path"]).suffix.lower() or ".jpg"
            _place_image(im["path"], out / "JPEGImages" / f"{stem}{suffix}")
            xml = out / "Annotations" / f"{stem}.xml"
            xml.parent.mkdir(parents=True, exist_ok=True)
            xml.write_bytes(voc_xml({**im, "file": stem + suffix}, anns[int(im["id"])], names))
            ids.append(stem)
        lst = out / "ImageSets" / "Main" / f"{data.name}.txt"
        lst.parent.mkdir(parents=True, exist_ok=True)
        lst.write_text("".join(i + "\n" for i in ids))
        result.images[data.name], result.boxes[data.name] = len(data.images), len(data.annotations)
        yaml_splits[data.name] = f"ImageSets/Main/{data.name}.txt"
    return yaml_splits


WRITERS: Dict[str, Callable[[Sequence[SplitData], Path, ConvertResult], dict]] = {
    "coco": write_coco, "yolo": write_yolo, "voc": write_voc}


def convert_dataset(cfg: DataConfig, to: str, out: Path,
                    splits: Optional[Sequence[str]] = None,
                    progress: Callable[[str], None] = lambda _: None) -> ConvertResult:
    """Write ``cfg``'s splits (default: every split it has) to ``out`` in format ``to``, with
    ``out/data.yaml``; returns what was written."""
    if to not in WRITERS:
        raise ValueError(f"unknown target format '{to}' (one of {', '.join(TARGETS)})")
    names = [s for s in (splits or SPLITS) if getattr(cfg, s) is not None]
    read = []
    for split in names:
        progress(f"reading {split}")
        read.append(read_split(cfg, split))
    out.mkdir(parents=True, exist_ok=True)
    result = ConvertResult(out / "data.yaml")
    progress(f"writing {to} to {out}")
    yaml_splits = WRITERS[to](read, out, result)
    doc = {"format": to, "root": ".", **yaml_splits, "names": _names(read[0]) if read else []}
    result.data_yaml.write_text(f"# converted from {cfg.source or 'a data config'} by cspdet convert\n"
                                + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return result
