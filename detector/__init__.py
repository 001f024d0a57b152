"""cspdet: real-time object detection with Cross Stage Partial networks.

The top-level names load lazily, so that ``import detector.cli`` (the ``cspdet`` command) can set
thread policy before torch and OpenMP are loaded.
"""
import os

__version__ = "0.1.0"

# cspdet makes no network calls at run time: albumentations would check PyPI for a newer
# release when imported (set the variable to 0 to let it).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

_LAZY = {"ConfigError": "detector.config", "load_config": "detector.config",
         "build_model": "detector.models.builder"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'detector' has no attribute {name!r}")
