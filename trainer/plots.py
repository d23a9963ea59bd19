"""ROC curve and confusion matrix figures, drawn with matplotlib's Agg canvas (no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from trainer.metrics import roc_points


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """One ROC curve per named (y_true, prob) pair, with its AUROC in the legend."""
    figure = Figure(figsize=(4.5, 4.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, (y_true, prob) in curves.items():
        fpr, tpr = roc_points(y_true, prob)
        axes.plot(fpr, tpr, label=f"{name} (AUROC {np.trapezoid(tpr, fpr):.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    axes.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path)


def plot_confusion(matrix: list[list[int]], class_names: Sequence[str], path: Path, title: str) -> None:
    """A K x K confusion matrix, rows = truth, columns = prediction, counts in the cells."""
    counts = np.asarray(matrix)
    side = 3.2 + 0.5 * len(class_names)
    figure = Figure(figsize=(side + 0.4, side), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes)
    for (row, col), value in np.ndenumerate(counts):
        color = "white" if value > counts.max() / 2 else "black"
        axes.text(col, row, str(value), ha="center", va="center", color=color)
    ticks = list(range(len(class_names)))
    slanted = len(class_names) > 2
    axes.set_xticks(ticks, list(class_names), rotation=45 if slanted else 0, ha="right" if slanted else "center")
    axes.set_yticks(ticks, list(class_names))
    axes.set(xlabel="prediction", ylabel="truth", title=title)
    figure.tight_layout()
    figure.savefig(path)
