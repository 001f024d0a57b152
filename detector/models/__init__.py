"""Models: CSP blocks and backbones, necks, YOLO heads and the detector, built from configs.

``layers`` holds the layers every part is made of; ``blocks`` the blocks and stages (the block
classes below can be passed to :class:`CSPNet` or a stage by class); ``state_dict`` reads
weights into models. Nothing here imports the trainer (``detector.engine``).
"""
from .builder import build_model  # noqa: F401
from .backbones import CSPBackbone, CSPNet, build_backbone  # noqa: F401
from .blocks import (CSPStage, DarkBlock, DarknetBottleneck, DenseLayer, PeleeStem,  # noqa: F401
                     PlainStage, ResNetBasicBlock, ResNetBottleneck, ResNeXtBottleneck,
                     TwoWayDenseLayer)
from .layers import SAM, SPP, ConvNormAct, Maxout, SqueezeSPP  # noqa: F401
from .timm_convert import from_timm_state_dict, load_pretrained_backbone  # noqa: F401
