"""The evaluation report written after training: metrics.json and its plots."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trainer.metrics import binary_metrics
from trainer.plots import plot_confusion, plot_roc

SplitPredictions = Mapping[str, tuple[np.ndarray, np.ndarray]]  # split name -> (y_true [N, L], prob [N, L])


def split_metrics(predictions: SplitPredictions, label: str, threshold: float) -> dict[str, Any]:
    """binary_metrics of the single label for every split."""
    return {name: binary_metrics(y[:, 0], p[:, 0], threshold) for name, (y, p) in predictions.items()}


def write_report(
    output_dir: Path, predictions: SplitPredictions, label: str, threshold: float, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """Write metrics.json, roc.png and confusion_matrix.png (of the last split given) and return the metrics."""
    metrics = {"label": label, "threshold": threshold, **extra, **split_metrics(predictions, label, threshold)}
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    curves = {name: (y[:, 0], p[:, 0]) for name, (y, p) in predictions.items()}
    plot_roc(curves, output_dir / "roc.png", title=f"ROC: {label}")
    last = list(predictions)[-1]
    plot_confusion(
        metrics[last]["confusion_matrix"],
        (f"not {label}", label),
        output_dir / "confusion_matrix.png",
        title=f"{last}, threshold {threshold:.3f}",
    )
    return metrics
