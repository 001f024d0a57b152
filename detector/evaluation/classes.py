"""The evaluator's classes as the figures name them: index <-> dataset category id, names."""
from __future__ import annotations

from typing import Dict, List, Sequence


def cat_to_label(label_to_cat_id: Sequence[int]) -> Dict[int, int]:
    """Dataset category id -> the model's class index (the first one, as the evaluator does)."""
    out: Dict[int, int] = {}
    for label, cat_id in enumerate(label_to_cat_id):
        out.setdefault(int(cat_id), label)
    return out


def class_names(evaluator) -> List[str]:
    """The model's class names: the evaluator's, else the ground truth's category names."""
    nc = len(evaluator.label_to_cat_id)
    if evaluator.names is not None and len(evaluator.names) >= nc:
        return [str(n) for n in evaluator.names[:nc]]
    cats = evaluator.coco_gt.cats
    return [str(cats.get(int(c), {}).get("name", c)) for c in evaluator.label_to_cat_id]
