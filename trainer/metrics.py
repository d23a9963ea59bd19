"""Clinical classification metrics from labels and probabilities: numpy and scikit-learn only.

No torch here, so export can score an ONNX model's outputs with exactly these functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from trainer.thresholds import drop_unknown


def binary_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, Any]:
    """Metrics of one binary label at `threshold` (positive iff prob >= threshold).

    NaN labels are ignored. Ratios with a zero denominator (e.g. precision with no predicted
    positives) and ranking metrics on a one-class sample are None. Plain Python types only.
    """
    y, p = drop_unknown(y_true, prob)
    truth = y >= 0.5
    pred = p >= threshold
    tp = int(np.sum(truth & pred))
    fp = int(np.sum(~truth & pred))
    tn = int(np.sum(~truth & ~pred))
    fn = int(np.sum(truth & ~pred))
    sensitivity = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    both_classes = 0 < tp + fn < len(y)
    return {
        "auroc": float(roc_auc_score(truth, p)) if both_classes else None,
        "average_precision": float(average_precision_score(truth, p)) if both_classes else None,
        "accuracy": _ratio(tp + tn, len(y)),
        "balanced_accuracy": None if sensitivity is None or specificity is None else (sensitivity + specificity) / 2,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "precision": _ratio(tp, tp + fp),
        "recall": sensitivity,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "confusion_matrix": [[tn, fp], [fn, tp]],  # rows: truth (neg, pos); columns: prediction (neg, pos)
        "threshold": float(threshold),
        "n": len(y),
        "positives": tp + fn,
    }


def roc_points(y_true: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) along the ROC curve, for plotting."""
    y, p = drop_unknown(y_true, prob)
    fpr, tpr, _ = roc_curve(y >= 0.5, p)
    return fpr, tpr


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None
