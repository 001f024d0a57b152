"""cspdet: real-time object detection with Cross Stage Partial networks."""
from .config import ConfigError, load_config  # noqa: F401
from .models.builder import build_model  # noqa: F401

__version__ = "0.1.0"
