"""COCO evaluation: pycocotools metrics of a detector over a dataset."""
from .coco_evaluator import COCOEvaluator, STAT_NAMES, format_metrics, save_detections  # noqa: F401
from .evaluate import evaluate  # noqa: F401
