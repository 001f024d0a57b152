"""Models: CSP blocks and backbones, necks, YOLO heads and the detector, built from configs."""
from .builder import build_model  # noqa: F401
from .backbones import CSPBackbone, CSPNet, build_backbone  # noqa: F401
from .timm_convert import from_timm_state_dict, load_pretrained_backbone  # noqa: F401
