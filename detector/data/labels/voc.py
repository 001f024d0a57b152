"""Pascal VOC XML (labelImg, CVAT's VOC export, the VOCdevkit) -> records and ground truth.

In steps: pair images with XMLs (a split's id list under ``ImageSets/Main``, or a folder where
images and XMLs sit side by side), parse each XML, check each box against the decoded image's
own size, then build the records and a COCO-style ground truth for pycocotools.

What real XMLs hold, and what happens:

* corners are 1-based pixels, inclusive (the devkit's convention): pixel columns ``xmin..xmax``
  are the continuous box ``[xmin - 1, xmax]``;
* ``difficult`` objects are ignore regions: not training targets (unless the data config says
  ``difficult: train``) and, in evaluation, ``iscrowd`` ground truth, which pycocotools neither
  counts as a miss nor lets a detection on it count as a false positive;
* a ``size`` that is 0x0, missing or not the image's: the decoded image's size is used (noted);
* a ``filename`` that differs from the file: images pair with XMLs by name (noted); the
  ``filename`` is used only when no image has the XML's name;
* PNG bytes under a .jpg name: read by content (noted);
* an XML whose image is missing: skipped (reported); an image without an XML: background
  (reported); an XML that is not well-formed: its image is skipped (reported);
* boxes outside the image: clipped (reported); zero-size boxes (``xmin == xmax``): dropped
  (reported); an object without a usable ``bndbox``: skipped (reported);
* a class not in the data config's ``names``: fatal, one :class:`LabelError` naming every file
  and class. Without ``names``, :func:`collect_voc_names` reads them from the XMLs.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..image_io import IMAGE_SUFFIXES, ImageReadError, image_header
from ..records import PackedStrings, RecordStore
from .coco import CocoGroundTruth
from .report import ScanReport, check_image_file, fmt_box, list_images, sanitize_boxes

DIFFICULT_MODES = ("ignore", "train")


@dataclass
class VocObject:
    name: str
    box: Tuple[float, float, float, float]   # xyxy as written (1-based, inclusive)
    difficult: bool


@dataclass
class VocAnnotation:
    """One parsed XML: what it says, not yet checked against the image."""
    xml: str
    filename: str = ""
    size: Optional[Tuple[int, int]] = None    # (width, height) as written; None if absent
    objects: List[VocObject] = field(default_factory=list)


@dataclass
class VocPair:
    """An image and its XML; either may be missing (reported by the scan)."""
    image: Optional[str]
    xml: Optional[str]
    name: str                                 # the id / stem, for messages


@dataclass
class VocLabels:
    records: RecordStore
    names: List[str]
    gt: CocoGroundTruth
    report: ScanReport


# ------------------------------------------------------------------------------------ pairing
def _find_image(images_dir: Path, stem: str) -> Optional[Path]:
    for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
        path = images_dir / (stem + suffix)
        if path.is_file():
            return path
    return None


def read_id_list(list_file: Path) -> List[str]:
    """Image ids of a VOC list file: the first word of each line (``2008_000008`` or, in the
    per-class lists, ``2008_000008 -1``)."""
    with open(list_file, "r", encoding="utf-8", errors="replace") as f:
        return [line.split()[0] for line in f if line.strip()]


def pair_listed(list_file: Path, images_dir: Path, annotations_dir: Path) -> List[VocPair]:
    """The VOCdevkit layout: ids from ``ImageSets/Main/<split>.txt``."""
    pairs = []
    for stem in read_id_list(list_file):
        xml = annotations_dir / f"{stem}.xml"
        image = _find_image(images_dir, stem)
        pairs.append(VocPair(str(image) if image else None, str(xml) if xml.is_file() else None, stem))
    return pairs


def pair_folder(images_dir: Path, annotations_dir: Path) -> Tuple[List[VocPair], List[str]]:
    """Every image under ``images_dir`` with the XML of the same relative name under
    ``annotations_dir`` (the same folder in the flat layout); also the XMLs with no image."""
    pairs, stems = [], set()
    for image in list_images(images_dir):
        rel = image.relative_to(images_dir).with_suffix("")
        stems.add(str(rel))
        xml = annotations_dir / rel.with_suffix(".xml")
        pairs.append(VocPair(str(image), str(xml) if xml.is_file() else None, str(rel)))
    orphans = [str(x) for x in sorted(annotations_dir.rglob("*.xml"))
               if str(x.relative_to(annotations_dir).with_suffix("")) not in stems]
    return pairs, orphans


# ------------------------------------------------------------------------------------ parsing
def _number(node, tag: str) -> float:
    text = node.findtext(tag)
    if text is None or not text.strip():
        raise ValueError(f"no <{tag}>")
    return float(text.strip())


def parse_voc_xml(path: str) -> Tuple[VocAnnotation, List[str]]:
    """Parse one XML; returns it and the problems of its objects (each skipped). Raises
    ``ET.ParseError`` / ``OSError`` when the file cannot be read at all."""
    root = ET.parse(path).getroot()
    ann = VocAnnotation(path, filename=(root.findtext("filename") or "").strip())
    size = root.find("size")
    if size is not None:
        try:
            ann.size = (int(_number(size, "width")), int(_number(size, "height")))
        except ValueError:
            ann.size = None
    problems = []
    for k, obj in enumerate(root.findall("object"), 1):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        if not name or box is None:
            problems.append(f"{path} object {k}: no <name> or no <bndbox>")
            continue
        try:
            coords = tuple(_number(box, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as e:
            problems.append(f"{path} object {k} ({name}): bndbox {e or 'not numbers'}")
            continue
        difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "", "false", "False")
        ann.objects.append(VocObject(name, coords, difficult))
    return ann, problems


# ------------------------------------------------------------------------------------ scanning
@dataclass
class _Collected:
    """What the scan keeps per usable image, before it becomes arrays."""
    paths: List[str] = field(default_factory=list)
    hw: List[Tuple[int, int]] = field(default_factory=list)
    boxes: List[np.ndarray] = field(default_factory=list)       # continuous xyxy, image pixels
    classes: List[np.ndarray] = field(default_factory=list)
    difficult: List[np.ndarray] = field(default_factory=list)


def scan_voc(pairs: Sequence[VocPair], names: Sequence[str], orphan_xmls: Iterable[str] = (),
             difficult: str = "ignore", strict: bool = True) -> VocLabels:
    """Read the XMLs of ``pairs`` against ``names`` (see the module docstring for each case).

    ``difficult``: ``ignore`` (not targets; ignore regions in evaluation) or ``train``
    (targets too; still ignore regions in evaluation, as VOC scores them).
    """
    if difficult not in DIFFICULT_MODES:
        raise ValueError(f"difficult must be one of {DIFFICULT_MODES}, got '{difficult}'")
    report = ScanReport(error_title="VOC objects whose class is not in the data config's names "
                                    f"({', '.join(names)})")
    index = {n: i for i, n in enumerate(names)}
    unknown: Dict[str, List[str]] = {}
    got = _Collected()
    for pair in pairs:
        _scan_pair(pair, index, got, report, unknown)
    for xml in orphan_xmls:
        _scan_orphan(xml, index, got, report, unknown)
    for file, classes in unknown.items():
        report.errors.append(f"{file}: {', '.join(sorted(set(classes)))}")
    labels = _build(got, list(names), difficult, report)
    if strict:
        report.raise_errors()
    return labels


def _scan_orphan(xml: str, index: Dict[str, int], got: _Collected, report: ScanReport,
                 unknown: Dict[str, List[str]]) -> None:
    """An XML with no image of its name: its ``filename`` may still name an image beside it."""
    try:
        ann, _ = parse_voc_xml(xml)
    except (ET.ParseError, OSError) as e:
        report.unreadable_labels.append(f"{xml}: {e}")
        return
    image = Path(xml).parent / ann.filename if ann.filename else None
    if image is not None and image.is_file() and image.suffix.lower() in IMAGE_SUFFIXES:
        report.notes.append(f"{xml}: no image of its name; paired with its <filename> {ann.filename}")
        _scan_pair(VocPair(str(image), xml, Path(xml).stem), index, got, report, unknown)
    else:
        report.labels_without_image.append(xml)


def _scan_pair(pair: VocPair, index: Dict[str, int], got: _Collected, report: ScanReport,
               unknown: Dict[str, List[str]]) -> None:
    """One image and its XML -> one record (or a reported skip)."""
    ann, problems = VocAnnotation(xml=""), []
    if pair.xml is not None:
        try:
            ann, problems = parse_voc_xml(pair.xml)
        except (ET.ParseError, OSError) as e:
            report.unreadable_labels.append(f"{pair.xml}: {e}")
            return
    image = pair.image
    if image is None and ann.filename and pair.xml is not None:
        candidate = Path(pair.xml).parent.parent / "JPEGImages" / ann.filename
        image = str(candidate) if candidate.is_file() else None
    if image is None:
        report.missing_images.append(f"{pair.name}: no image file" +
                                     (f" (XML {pair.xml})" if pair.xml else ""))
        return
    if not check_image_file(image, report):
        return
    try:
        hw, fmt = image_header(image)
    except ImageReadError as e:
        report.unreadable_images.append(str(e))
        return
    _note_file_quirks(pair, ann, image, hw, fmt, report)
    report.malformed_lines.extend(problems)
    boxes, classes, difficult = _objects(ann, image, hw, index, report, unknown)
    got.paths.append(image)
    got.hw.append(hw)
    got.boxes.append(boxes)
    got.classes.append(classes)
    got.difficult.append(difficult)


def _note_file_quirks(pair: VocPair, ann: VocAnnotation, image: str, hw: Tuple[int, int], fmt: str,
                      report: ScanReport) -> None:
    name = Path(image).name
    if pair.xml is None:
        report.notes.append(f"{image}: no XML (kept as a background image)")
        return
    if ann.size is None or ann.size != (hw[1], hw[0]):
        said = "no <size>" if ann.size is None else f"<size> {ann.size[0]}x{ann.size[1]}"
        report.notes.append(f"{pair.xml}: {said}, the image is {hw[1]}x{hw[0]} (the image's size is used)")
    if ann.filename and ann.filename != name:
        report.notes.append(f"{pair.xml}: <filename> {ann.filename} differs from the file {name} "
                            f"(paired by name)")
    expected = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(Path(image).suffix.lower())
    if expected and fmt and fmt != expected:
        report.notes.append(f"{image}: {fmt} data under a {Path(image).suffix} name (read as {fmt})")


def _objects(ann: VocAnnotation, image: str, hw: Tuple[int, int], index: Dict[str, int],
             report: ScanReport, unknown: Dict[str, List[str]]):
    """The XML's objects as continuous xyxy boxes clipped to the image, classes, difficult."""
    keep_objs = []
    for k, obj in enumerate(ann.objects, 1):
        if obj.name not in index:
            unknown.setdefault(ann.xml, []).append(obj.name)
            continue
        x1, y1, x2, y2 = obj.box
        if not (x2 > x1 and y2 > y1):
            report.dropped_boxes.append(f"{ann.xml} object {k} ({obj.name}): zero or negative size "
                                        f"{fmt_box(obj.box)}")
            continue
        keep_objs.append(obj)
    boxes = np.array([(o.box[0] - 1, o.box[1] - 1, o.box[2], o.box[3]) for o in keep_objs],
                     np.float32).reshape(-1, 4)
    classes = np.array([index[o.name] for o in keep_objs], np.int64)
    difficult = np.array([o.difficult for o in keep_objs], bool)
    ok = sanitize_boxes(boxes, hw[1], hw[0], lambda i: f"{ann.xml} object {keep_objs[i].name} "
                        f"{fmt_box(keep_objs[i].box)}", report, tol=1.0)
    return boxes[ok], classes[ok], difficult[ok]


def _build(got: _Collected, names: List[str], difficult: str, report: ScanReport) -> VocLabels:
    """Records (training targets) and the COCO-style ground truth (difficult = iscrowd)."""
    n = len(got.paths)
    image_ids = np.arange(1, n + 1, dtype=np.int64)
    empty4, empty = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    boxes = np.concatenate(got.boxes) if n else empty4
    classes = np.concatenate(got.classes) if n else empty
    hard = np.concatenate(got.difficult) if n else np.zeros(0, bool)
    counts = np.array([len(b) for b in got.boxes], np.int64)
    owner = np.repeat(image_ids, counts)
    target = ~hard if difficult == "ignore" else np.ones(len(hard), bool)
    records = RecordStore(PackedStrings(got.paths), image_ids, boxes[target], classes[target],
                          np.bincount(owner[target] - 1, minlength=n) if n else counts,
                          np.array(got.hw, np.int64).reshape(-1, 2), normalized=False)
    report.images, report.boxes = n, int(target.sum())
    report.difficult_boxes = int(hard.sum())
    per_image = np.bincount(owner[target] - 1, minlength=n) if n else counts
    report.background_images = [Path(got.paths[i]).name for i in np.flatnonzero(per_image == 0)]
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).astype(np.float64)
    gt = CocoGroundTruth(
        image_ids, PackedStrings(Path(p).name for p in got.paths), np.array(got.hw, np.int64).reshape(-1, 2),
        np.arange(1, len(boxes) + 1, dtype=np.int64), owner, classes + 1, xywh,
        xywh[:, 2] * xywh[:, 3], hard.astype(np.uint8),
        [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(names)])
    return VocLabels(records, names, gt, report)


def collect_voc_names(pair_lists: Iterable[Sequence[VocPair]]) -> List[str]:
    """Class names found in the XMLs of every split, sorted (used when the data config lists
    none, so that every split gets the same class indices)."""
    found = set()
    for pairs in pair_lists:
        for pair in pairs:
            if pair.xml is None:
                continue
            try:
                ann, _ = parse_voc_xml(pair.xml)
            except (ET.ParseError, OSError):
                continue   # the scan reports it
            found.update(o.name for o in ann.objects)
    return sorted(found)


def voc_pairs(images: str, annotations: str, list_file: str = "") -> Tuple[List[VocPair], List[str]]:
    """The split's (image, XML) pairs and the XMLs with no image, from a list file or a folder."""
    if list_file:
        return pair_listed(Path(list_file), Path(images), Path(annotations)), []
    return pair_folder(Path(images), Path(annotations or images))


__all__ = ["VocLabels", "VocPair", "VocAnnotation", "VocObject", "scan_voc", "voc_pairs",
           "collect_voc_names", "parse_voc_xml", "read_id_list", "DIFFICULT_MODES"]
