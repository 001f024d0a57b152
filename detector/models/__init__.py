"""Models: CSP blocks and backbones, necks, YOLO heads and the detector, built from configs."""
from .builder import build_model  # noqa: F401
