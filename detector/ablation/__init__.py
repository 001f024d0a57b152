"""The paper's ablations as data: sets of variants in a YAML file, each variant trained with
the same budget and seeds, measured, and written as one markdown table (``cspdet ablate``).

- :mod:`.sets`: the file (``load_sets``, ``Variant``, ``AblationSet``, ``AblationError``), the
  choice of set / budget / variants and ``run_config`` (one variant's training config);
- :mod:`.run`: ``run_ablation`` (train, measure, time), ``model_stats``, ``ort_latency``;
- :mod:`.table`: ``markdown``.
"""
from .run import METRICS, AblationRun, run_ablation
from .sets import (DEFAULT_SETS, AblationError, AblationSet, Variant, load_sets, pick_budget, pick_set,
                   pick_variants, run_config)
from .table import markdown

__all__ = ["METRICS", "AblationRun", "run_ablation", "DEFAULT_SETS", "AblationError", "AblationSet", "Variant",
           "load_sets", "pick_budget", "pick_set", "pick_variants", "run_config", "markdown"]
