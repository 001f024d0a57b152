"""What an evaluation writes for a person to look at, and the confidence threshold it chooses.

:func:`write_eval_report` takes a summarized :class:`COCOEvaluator` (and the dataset it scored,
for the images) and writes into one folder::

    P_curve.png  R_curve.png  F1_curve.png     precision / recall / F1 against the confidence
    PR_curve.png                               precision against recall at IoU 0.5
    confusion_matrix.png  confusion_matrix_normalized.png  confusion_matrix.csv
    val_batch0_labels_vs_pred.png ...          ground truth | predictions, side by side

The threshold: the user's value, else the F1-optimal one stored with the weights (by training,
:mod:`detector.inference.confidence`), else the confidence that maximises the mean F1 over
classes on the evaluated split (curves.py). See docs/evaluation.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from ..inference.confidence import DEFAULT_CONF, describe_conf as describe_choice
from .coco_evaluator import fmt_percent
from .confusion import confusion_matrix
from .curves import confidence_curves, overall_row
from .image_grids import write_image_grids
from .plots import plot_confidence_curve, plot_confusion, plot_pr_curve

CURVE_FILES = {"precision": "P_curve.png", "recall": "R_curve.png", "f1": "F1_curve.png"}


def choose_conf(curves, conf: Optional[float], stored: Optional[float] = None) -> tuple:
    """(threshold in use, where it comes from: ``user`` / ``stored`` / ``f1`` / ``default``)."""
    if conf is not None:
        if not 0.0 <= float(conf) <= 1.0:
            raise ValueError(f"confidence threshold must be in [0, 1], got {conf}")
        return float(conf), "user"
    if stored is not None:
        return float(stored), "stored"
    best, _ = curves.best_conf()
    return (best, "f1") if best is not None else (DEFAULT_CONF, "default")


def write_eval_report(evaluator, dataset, out_dir, conf: Optional[float] = None, iou: float = 0.45,
                      grids: int = 2, stored_conf: Optional[float] = None, plots: bool = True) -> Dict[str, Any]:
    """Write every figure of the evaluation into ``out_dir``; the evaluator must be summarized.

    ``dataset``: the scored split, for the image grids (None: no grids). ``conf``: the threshold
    for the table, the confusion matrix and the image grids (None = the F1-optimal one); ``iou``:
    the confusion matrix's matching IoU; ``grids``: how many image grids (6 images each);
    ``stored_conf``: the F1-optimal confidence stored with the weights, used when ``conf`` is None;
    ``plots`` False: no pictures (curves, confusion PNGs, grids), the tables and the CSV only.

    Returns ``conf`` (in use) and ``conf_source`` (``user``, ``stored``, ``f1`` or ``default``
    when nothing is detected correctly), ``best_conf`` / ``best_f1`` (the F1 optimum, None / 0
    without one: the value to store with a checkpoint), ``per_class`` (the evaluator's rows
    with ``precision``, ``recall``, ``f1`` at ``conf``; precision NaN where nothing is kept),
    ``overall`` and ``files`` (name -> path written).
    """
    out_dir = Path(out_dir)
    curves = confidence_curves(evaluator)
    best_conf, best_f1 = curves.best_conf()
    used, source = choose_conf(curves, conf, stored_conf)
    rows = curves.rows_at(used)
    overall = overall_row(rows)
    cm = confusion_matrix(evaluator, used, iou)
    files = {"confusion_matrix.csv": cm.write_csv(out_dir / "confusion_matrix.csv")}
    if not plots:
        return {"conf": used, "conf_source": source, "best_conf": best_conf, "best_f1": best_f1,
                "iou": float(iou), "per_class": rows, "overall": overall, "files": files}
    files.update({name: plot_confidence_curve(curves, what, out_dir / name, used)
                  for what, name in CURVE_FILES.items()})
    files["PR_curve.png"] = plot_pr_curve(curves, out_dir / "PR_curve.png", used)
    files["confusion_matrix.png"] = plot_confusion(cm, out_dir / "confusion_matrix.png")
    files["confusion_matrix_normalized.png"] = plot_confusion(
        cm, out_dir / "confusion_matrix_normalized.png", normalized=True)
    if dataset is not None:
        for path in write_image_grids(evaluator, dataset, out_dir, used, grids=grids):
            files[path.name] = path
    return {"conf": used, "conf_source": source, "best_conf": best_conf, "best_f1": best_f1,
            "iou": float(iou), "per_class": rows, "overall": overall, "files": files}


def describe_conf(report: Dict[str, Any], holder: str = "checkpoint") -> str:
    """One line saying which threshold the table uses and why (``holder``: the weights' file
    kind); with a threshold not chosen here, also this split's F1 optimum."""
    conf, source = report["conf"], report["conf_source"]
    if source == "f1":
        return f"conf {conf:.3g} (maximises the mean F1 over classes here: {report['best_f1']:.3f})"
    if source == "default":
        return f"conf {conf:.3g} (default: no detection is correct, F1 has no maximum)"
    line = describe_choice(conf, source, holder)
    if report["best_conf"] is not None:
        line += f"; F1-optimal here: {report['best_conf']:.3g} (mean F1 {report['best_f1']:.3f})"
    return line


def format_pr_table(rows: List[Dict[str, Any]]) -> str:
    """Precision, recall and F1 per class (percentages), with the ``all`` row first."""
    if not rows:
        return "no class with ground truth"
    width = max(8, max(len(str(r["name"])) for r in rows))
    lines = [f"{'class':<{width}} {'inst':>5} {'P':>5} {'R':>5} {'F1':>5}"]
    for r in [overall_row(rows)] + list(rows):
        lines.append(f"{str(r['name']):<{width}} {r['instances']:>5} {fmt_percent(r['precision'])} "
                     f"{fmt_percent(r['recall'])} {fmt_percent(r['f1'])}")
    return "\n".join(lines)
