"""The run folder: its name (:func:`next_run_dir`), ``train.log`` (:func:`log_to_file`),
``results.csv`` (one row per epoch), ``results.png`` curves and TensorBoard (:class:`RunLogger`).

Only rank 0 writes. The CSV is rewritten from the rows kept in memory (and re-read on resume),
so a run killed mid-write and resumed has no duplicate epochs. The columns default to the
detector's; another trainer passes its own (``RunLogger(dir, columns=..., plotted=...)``).
"""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

LOGGER = logging.getLogger("cspdet.train")

CSV_COLUMNS = ["epoch", "train/box", "train/obj", "train/cls", "train/total", "lr",
               "AP", "AP50", "AP75", "bad_steps", "epoch_time_s", "images_per_s"]
PLOTTED = ["train/box", "train/obj", "train/cls", "train/total", "lr", "AP", "AP50", "AP75"]


def next_run_dir(save_dir, name: str, exist_ok: bool = False) -> Path:
    """``save_dir/name``, or ``name2``, ``name3`` ... when it is taken (unless ``exist_ok``)."""
    base = Path(save_dir) / name
    if exist_ok or not base.exists():
        return base
    n = 2
    while (Path(save_dir) / f"{name}{n}").exists():
        n += 1
    return Path(save_dir) / f"{name}{n}"


def log_to_file(path) -> logging.Handler:
    """Also write the ``cspdet`` log to ``path`` (the run's ``train.log``); undo with
    :func:`remove_log_file`."""
    root = logging.getLogger("cspdet")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def remove_log_file(handler: Optional[logging.Handler]) -> None:
    if handler is not None:
        logging.getLogger("cspdet").removeHandler(handler)
        handler.close()


class RunLogger:
    def __init__(self, run_dir, tensorboard: bool = True, plots: bool = True,
                 columns: Sequence[str] = CSV_COLUMNS, plotted: Sequence[str] = PLOTTED):
        self.columns, self.plotted = list(columns), list(plotted)
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "results.csv"
        self.png_path = self.run_dir / "results.png"
        self.plots = plots
        self.rows: List[Dict[str, float]] = []
        if self.csv_path.is_file():
            with open(self.csv_path, newline="") as f:
                self.rows = [{k: _num(v) for k, v in row.items()} for row in csv.DictReader(f)]
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
            except Exception as e:  # tensorboard not installed: CSV and plots still work
                LOGGER.warning("TensorBoard logging off: %s", e)

    def keep_epochs_before(self, epoch: int) -> None:
        """On resume: drop rows of epochs that will be trained again."""
        self.rows = [r for r in self.rows if r.get("epoch", 0) < epoch]

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.tb is not None:
            for k, v in values.items():
                if v is not None and math.isfinite(float(v)):
                    self.tb.add_scalar(k, float(v), step)

    def log_epoch(self, row: Mapping[str, float]) -> None:
        row = {k: row.get(k, float("nan")) for k in self.columns}
        self.rows = [r for r in self.rows if r.get("epoch") != row["epoch"]] + [row]
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            for r in self.rows:
                writer.writerow({k: _fmt(r.get(k)) for k in self.columns})
        tmp.replace(self.csv_path)
        self.scalars({k: row[k] for k in self.plotted if k in row}, int(row["epoch"]))
        if self.tb is not None:
            self.tb.flush()
        if self.plots:
            try:
                plot_results(self.rows, self.png_path, self.plotted)
            except Exception as e:  # a plot must never stop training
                LOGGER.warning("could not draw %s: %s", self.png_path, e)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def plot_results(rows: List[Mapping[str, float]], path, keys: Sequence[str] = PLOTTED
                 ) -> Optional[Path]:
    """One small panel per column in ``keys``, epoch on x."""
    if not rows:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, max(1, len(keys)))
    nrows = max(1, -(-len(keys) // cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3.5 * cols, 3 * nrows), tight_layout=True,
                             squeeze=False)
    epochs = [r["epoch"] for r in rows]
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    for ax, key in zip(axes.ravel(), keys):
        ys = [r.get(key, float("nan")) for r in rows]
        pts = [(x, y) for x, y in zip(epochs, ys) if y is not None and math.isfinite(y)]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", linewidth=1.5)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return Path(path)


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        if v != v:
            return ""
        return f"{v:.6g}"
    return v
