"""The evaluation report written after training: metrics.json and its plots."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medcore.atomic import atomic_write
from medcore.record import Task
from trainer.metrics import task_metrics
from trainer.plots import plot_confusion, plot_roc

SplitPredictions = Mapping[str, tuple[np.ndarray, np.ndarray]]  # split name -> (y_true [N, L], prob [N, L])


def write_report(
    output_dir: Path,
    predictions: SplitPredictions,
    task: Task,
    labels: Sequence[str],
    thresholds: Mapping[str, float],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """Write metrics.json, roc.png and (binary, multi-class) confusion_matrix.png of the last split; return the metrics.

    Binary: one label's metrics per split. Multi-label: per label plus macro means; the ROC figure
    shows each label on the last split. Multi-class: accuracy, balanced accuracy, per class, K x K confusion.
    """
    head: dict[str, Any] = (
        {"label": labels[0], "threshold": thresholds[labels[0]]}
        if task is Task.BINARY
        else {"labels": list(labels), "thresholds": dict(thresholds)}
    )
    per_split = {name: task_metrics(task, y, p, thresholds, labels) for name, (y, p) in predictions.items()}
    metrics = {**head, **extra, **per_split}
    text = json.dumps(metrics, indent=2) + "\n"
    atomic_write(output_dir / "metrics.json", lambda handle: handle.write(text.encode()))
    _plots(output_dir, predictions, task, labels, thresholds, metrics)
    return metrics


def _plots(
    output_dir: Path,
    predictions: SplitPredictions,
    task: Task,
    labels: Sequence[str],
    thresholds: Mapping[str, float],
    metrics: Mapping[str, Any],
) -> None:
    last = list(predictions)[-1]
    confusion = output_dir / "confusion_matrix.png"
    if task is Task.BINARY:
        label = labels[0]
        curves = {name: (y[:, 0], p[:, 0]) for name, (y, p) in predictions.items()}
        plot_roc(curves, output_dir / "roc.png", title=f"ROC: {label}")
        title = f"{last}, threshold {thresholds[label]:.3f}"
        plot_confusion(metrics[last]["confusion_matrix"], (f"not {label}", label), confusion, title=title)
        return
    y, p = predictions[last]
    if task is Task.MULTICLASS:  # the one-hot columns give one-vs-rest curves below
        plot_confusion(metrics[last]["confusion_matrix"], labels, confusion, title=f"{last}, most probable class")
    curves = {name: (y[:, j], p[:, j]) for j, name in enumerate(labels) if _both_classes(y[:, j])}
    plot_roc(curves, output_dir / "roc.png", title=f"ROC per label ({last})")


def _both_classes(column: np.ndarray) -> bool:
    known = column[~np.isnan(column)]
    return bool(known.size) and 0 < known.sum() < known.size
