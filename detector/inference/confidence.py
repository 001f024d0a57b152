"""Which confidence threshold inference uses, and the words that say so.

A training run stores with its weights the confidence that maximised the mean F1 on its val
split (``conf_thres_f1`` in the checkpoint and in an exported file's metadata). Inference uses,
in order: the threshold the user passes, that stored one, else :data:`DEFAULT_CONF`; the tools
print which, so that a user can tell a chosen threshold from a default.
"""
from __future__ import annotations

from typing import Optional, Tuple

DEFAULT_CONF = 0.25   # weights without a stored threshold (older checkpoints, configs)


def pick_conf(user: Optional[float], stored: Optional[float]) -> Tuple[float, str]:
    """(threshold, where it comes from: ``user``, ``stored`` or ``default``)."""
    if user is not None:
        return float(user), "user"
    if stored is not None:
        return float(stored), "stored"
    return DEFAULT_CONF, "default"


def describe_conf(conf: float, source: str, holder: str = "checkpoint") -> str:
    """``conf 0.313 (F1-optimal on val, stored in the checkpoint)``, ``... (yours)`` or
    ``... (default: none stored with the weights)``; ``holder`` names the weights' file kind."""
    why = {"user": "yours",
           "stored": f"F1-optimal on val, stored in the {holder}",
           "default": "default: none stored with the weights"}[source]
    return f"conf {conf:.3g} ({why})"
