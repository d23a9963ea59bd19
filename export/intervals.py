"""95% confidence intervals for the card: Wilson for proportions, a percentile bootstrap for AUROC."""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959964
BOOTSTRAP_SAMPLES = 500


def wilson(successes: int, n: int) -> list[float] | None:
    """Wilson score interval of a proportion; None for n == 0."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def bootstrap_auroc(truth: np.ndarray, prob: np.ndarray, seed: int = 0) -> list[float] | None:
    """2.5th and 97.5th percentile of AUROC over resamples of the cases (fixed seed: reproducible)."""
    from sklearn.metrics import roc_auc_score

    known = ~np.isnan(truth)
    y, p = truth[known] >= 0.5, prob[known]
    if y.all() or not y.any():
        return None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(BOOTSTRAP_SAMPLES):
        rows = rng.integers(0, len(y), len(y))
        if y[rows].all() or not y[rows].any():
            continue
        values.append(roc_auc_score(y[rows], p[rows]))
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def label_intervals(truth: np.ndarray, prob: np.ndarray, metrics: dict[str, object]) -> dict[str, list[float] | None]:
    """CIs of AUROC, accuracy, sensitivity and specificity from a `binary_metrics` result."""
    matrix: list[list[int]] = metrics["confusion_matrix"]  # type: ignore[assignment]
    (tn, fp), (fn, tp) = matrix
    return {
        "auroc": bootstrap_auroc(truth, prob),
        "accuracy": wilson(tp + tn, tp + tn + fp + fn),
        "sensitivity": wilson(tp, tp + fn),
        "specificity": wilson(tn, tn + fp),
    }
