"""Label readers, one per dataset format, each turning a split's label files into a
:class:`~detector.data.records.RecordStore` (training targets) and a :class:`ScanReport`
(every problem found, for logs and ``cspdet check-data``):

* :mod:`.coco`: COCO instances JSON (also the ground truth pycocotools scores against);
* :mod:`.yolo`: YOLO txt files beside the images;
* :mod:`.voc`: Pascal VOC XML (VOCdevkit lists or a flat folder).

What they share (the report, the error, box clipping) lives in :mod:`.report`.
"""
from ..records import ImageRecord, PackedStrings, RecordStore, release_freed_memory  # noqa: F401
from .coco import CocoGroundTruth, CocoLabels, scan_coco  # noqa: F401
from .report import (LabelError, ScanReport, check_image_file, fmt_box, list_images,  # noqa: F401
                     sanitize_boxes)
from .voc import (DIFFICULT_MODES, VocLabels, VocPair, collect_voc_names, parse_voc_xml,  # noqa: F401
                  scan_voc, voc_pairs)
from .yolo import YoloLabels, scan_yolo, yolo_ground_truth  # noqa: F401
