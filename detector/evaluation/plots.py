"""The evaluation figures as PNG files: P, R and F1 against confidence, PR, confusion matrix.

Drawn on bare ``matplotlib.figure.Figure`` objects (Agg, no pyplot): nothing global changes in
the caller's process and it works without a display. Classes keep the colours the image grids
and the demo give them (:func:`detector.drawing.class_color`); with many classes the per-class
lines turn grey and the legend keeps only the mean, so that the figure stays readable.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ..drawing import class_color
from .confusion import ConfusionMatrix
from .curves import ConfidenceCurves, overall_row

MAX_LEGEND_CLASSES = 20     # more classes: grey lines, legend for the mean only
MAX_ANNOTATED_CELLS = 30    # more classes: confusion matrix cells without numbers

CURVE_LABELS = {"precision": "Precision", "recall": "Recall", "f1": "F1"}


def _figure(size=(7.5, 5.5)):
    from matplotlib.figure import Figure
    return Figure(figsize=size, dpi=120, layout="constrained")


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _rgb(label) -> tuple:
    b, g, r = class_color(-1 if label is None else label)
    return (r / 255, g / 255, b / 255)


def _class_lines(ax, curves: ConfidenceCurves, x, ys, name=lambda row: str(row["name"])) -> None:
    """One thin line per class, coloured and named (``name(row)``) while the legend stays readable."""
    few = len(curves.classes) <= MAX_LEGEND_CLASSES
    for row, y in zip(curves.classes, ys):
        ax.plot(x, y, linewidth=1, alpha=0.9 if few else 0.35,
                color=_rgb(row["label"]) if few else "grey", label=name(row) if few else None)


def _finish(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", frameon=False)


def plot_confidence_curve(curves: ConfidenceCurves, what: str, path, conf: Optional[float]) -> Path:
    """``what`` (precision / recall / f1) of each class and their mean against the confidence;
    ``conf`` (the threshold in use) is marked with the mean's value there."""
    fig = _figure()
    ax = fig.add_subplot()
    _class_lines(ax, curves, curves.conf, getattr(curves, what))
    mean = curves.mean(what)
    ax.plot(curves.conf, mean, color="black", linewidth=2.5, label="all classes (mean)")
    if conf is not None:
        value = overall_row(curves.rows_at(conf))[what]
        ax.axvline(conf, color="red", linestyle="--", linewidth=1,
                   label=f"conf {conf:.3f}: {CURVE_LABELS[what]} {value:.3f}")
        ax.plot([conf], [value], "o", color="red")
    _finish(ax, "Confidence threshold", CURVE_LABELS[what],
            f"{CURVE_LABELS[what]} vs confidence (IoU 0.5)")
    return _save(fig, path)


def plot_pr_curve(curves: ConfidenceCurves, path, conf: Optional[float] = None) -> Path:
    """Precision against recall at IoU 0.5 per class (legend: AP50) and the mean, whose area is
    the mAP50; the mean recall and precision at ``conf`` (the threshold in use) are marked."""
    fig = _figure()
    ax = fig.add_subplot()
    _class_lines(ax, curves, curves.recall_points, curves.pr_precision,
                 lambda row: f"{row['name']} {row['AP50']:.3f}")
    mean = curves.mean("pr_precision")
    ax.plot(curves.recall_points, mean, color="black", linewidth=2.5,
            label=f"all classes mAP@0.5 {float(np.mean(mean)) if len(curves.classes) else 0:.3f}")
    if conf is not None:
        at = overall_row(curves.rows_at(conf))
        ax.plot([at["recall"]], [at["precision"]], "o", color="red",
                label=f"conf {conf:.3f}: R {at['recall']:.3f}, P {at['precision']:.3f}")
    _finish(ax, "Recall", "Precision", "Precision-recall curve (IoU 0.5)")
    return _save(fig, path)


def plot_confusion(cm: ConfusionMatrix, path, normalized: bool = False) -> Path:
    """The matrix as a heat map: true class down, predicted across, background last."""
    values = cm.normalized() if normalized else cm.counts
    n = len(cm.names)
    side = min(max(5.0, 0.45 * n + 2.5), 20.0)
    fig = _figure((side + 2.5, side + 0.5))
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalized else max(1, values.max()))
    fig.colorbar(image, ax=ax, shrink=0.8)
    ticks, size = np.arange(n), "small" if n <= MAX_ANNOTATED_CELLS else "x-small"
    ax.set_xticks(ticks, cm.names, rotation=90 if n > 6 else 45, ha="center" if n > 6 else "right",
                  fontsize=size)
    ax.set_yticks(ticks, cm.names, fontsize=size)
    if n <= MAX_ANNOTATED_CELLS:
        top = values.max() if values.size else 0
        for (i, j), v in np.ndenumerate(values):
            if v:
                ax.text(j, i, f"{v:.2f}" if normalized else str(int(v)), ha="center", va="center",
                        fontsize="x-small" if n > 12 else "small",
                        color="white" if v > 0.5 * top else "black")
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    what = "normalised: each true row sums to 1" if normalized else "counts"
    ax.set_title(f"Confusion matrix ({what})\nconf >= {cm.conf:.3f}, IoU >= {cm.iou:.2f}",
                 fontsize="medium")
    return _save(fig, path)
