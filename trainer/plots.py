"""Report figures (ROC, precision-recall, confusion matrix, training curves, reliability), drawn with
matplotlib's Agg canvas: no display, no pyplot global state, so nothing leaks between runs or threads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import auc, precision_recall_curve

from trainer.metrics import roc_points
from trainer.thresholds import drop_unknown

Curves = Mapping[str, tuple[np.ndarray, np.ndarray]]  # legend name -> (y_true, prob)


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path)


def plot_roc(curves: Curves, path: Path, title: str) -> None:
    """One ROC curve per named (y_true, prob) pair, with its AUROC in the legend."""
    figure = _figure(4.5, 4.5)
    axes = figure.add_subplot()
    for name, (y_true, prob) in curves.items():
        fpr, tpr = roc_points(y_true, prob)
        axes.plot(fpr, tpr, label=f"{name} (AUROC {auc(fpr, tpr):.3f})")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    axes.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower right", fontsize="small")
    _save(figure, path)


def plot_precision_recall(curves: Curves, path: Path, title: str) -> None:
    """One precision-recall curve per named pair, with its prevalence (the chance level) in the legend."""
    figure = _figure(4.5, 4.5)
    axes = figure.add_subplot()
    for name, (y_true, prob) in curves.items():
        y, p = drop_unknown(y_true, prob)
        precision, recall, _ = precision_recall_curve(y >= 0.5, p)
        axes.step(recall, precision, where="post", label=f"{name} (prevalence {np.mean(y >= 0.5):.2f})")
    axes.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title=title, xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="lower left", fontsize="small")
    _save(figure, path)


def draw_confusion(axes: Any, matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str) -> Any:
    """A K x K confusion matrix on `axes`: rows = truth, columns = prediction, count and row share per cell."""
    counts = np.asarray(matrix)
    rows = counts.sum(axis=1, keepdims=True)
    image = axes.imshow(counts, cmap="Blues", vmin=0)
    for (row, col), value in np.ndenumerate(counts):
        share = value / rows[row, 0] if rows[row, 0] else 0.0
        color = "white" if value > counts.max() / 2 else "black"
        axes.text(col, row, f"{value}\n{share:.0%}", ha="center", va="center", color=color, fontsize=11)
    ticks = list(range(len(class_names)))
    slanted = len(class_names) > 2
    axes.set_xticks(ticks, list(class_names), rotation=45 if slanted else 0, ha="right" if slanted else "center")
    axes.set_yticks(ticks, list(class_names))
    axes.set(xlabel="prediction", ylabel="truth", title=title)
    return image


def plot_confusion(matrix: list[list[int]], class_names: Sequence[str], path: Path, title: str) -> None:
    """One confusion matrix figure (see `draw_confusion`)."""
    side = 3.4 + 0.6 * len(class_names)
    figure = _figure(side + 0.6, side)
    axes = figure.add_subplot()
    figure.colorbar(draw_confusion(axes, matrix, class_names, title), ax=axes)
    _save(figure, path)


def plot_confusions_side_by_side(
    matrices: Mapping[str, list[list[int]]], class_names: Sequence[str], path: Path
) -> None:
    """Several models' confusion matrices in one row, titled by model name (the `compare` figure)."""
    side = 3.2 + 0.6 * len(class_names)
    figure = _figure(side * len(matrices), side)
    for i, (name, matrix) in enumerate(matrices.items()):
        draw_confusion(figure.add_subplot(1, len(matrices), i + 1), matrix, class_names, name)
    _save(figure, path)


def plot_history(history: Sequence[Mapping[str, Any]], score_key: str, path: Path) -> None:
    """Training and validation loss, the validation score and accuracy, and the learning rate, per epoch."""
    figure = _figure(11.0, 3.4)
    epochs = [row["epoch"] + 1 for row in history]
    loss, score, rate = figure.add_subplot(1, 3, 1), figure.add_subplot(1, 3, 2), figure.add_subplot(1, 3, 3)
    loss.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train")
    loss.plot(epochs, [row["val_loss"] for row in history], marker="o", label="val")
    loss.set(xlabel="epoch", ylabel="loss", title="loss")
    loss.legend(fontsize="small")
    for key in (score_key, "val_accuracy"):
        values = [np.nan if row.get(key) is None else row[key] for row in history]
        score.plot(epochs, values, marker="o", label=key.replace("_", " "))
    score.set(xlabel="epoch", title="validation")
    score.legend(fontsize="small")
    rate.plot(epochs, [row["lr"] for row in history], marker="o")
    rate.set(xlabel="epoch", ylabel="learning rate (end of epoch)", title="schedule", yscale="log")
    _save(figure, path)


def plot_reliability(tables: Mapping[str, Mapping[str, Any]], path: Path, title: str) -> None:
    """Observed frequency against mean confidence per bin (dots sized by count), one series per name, with ECE."""
    figure = _figure(4.5, 4.5)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="perfect calibration")
    for name, summary in tables.items():
        table = summary["reliability"]
        if table is None:
            continue
        present = [i for i, n in enumerate(table["count"]) if n]
        x = [table["mean_confidence"][i] for i in present]
        y = [table["frequency"][i] for i in present]
        total = sum(table["count"])
        sizes = [12 + 300 * table["count"][i] / total for i in present]
        line = axes.plot(x, y, marker=None, label=f"{name} (ECE {summary['ece']:.3f})")[0]
        axes.scatter(x, y, s=sizes, color=line.get_color(), alpha=0.7)
    axes.set(xlabel="predicted probability", ylabel="observed frequency", title=title, xlim=(0, 1), ylim=(0, 1.01))
    axes.legend(loc="upper left", fontsize="small")
    _save(figure, path)
