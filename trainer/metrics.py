"""Clinical classification metrics from labels and probabilities: numpy and scikit-learn only.

No torch here, so export can score an ONNX model's outputs with exactly these functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from medcore.record import Task
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


def multiclass_metrics(y_true: np.ndarray, prob: np.ndarray, label_names: Sequence[str]) -> dict[str, Any]:
    """One-hot labels (rows with NaN are unknown and ignored) and class probabilities [N, K].

    Prediction is the most probable class. Balanced accuracy is the mean recall over the classes
    present (the reference microscopy task's score); AUROC is one-vs-rest per class and its mean.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(prob, dtype=np.float64)
    known = ~np.isnan(y).any(axis=1)
    truth, pred = y[known].argmax(axis=1), p[known].argmax(axis=1)
    k = len(label_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth, pred), 1)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    recall = [_ratio(int(confusion[i, i]), int(support[i])) for i in range(k)]
    precision = [_ratio(int(confusion[i, i]), int(predicted[i])) for i in range(k)]
    auroc = [
        float(roc_auc_score(truth == i, p[known][:, i])) if 0 < support[i] < len(truth) else None for i in range(k)
    ]
    return {
        "accuracy": _ratio(int(np.trace(confusion)), len(truth)),
        "balanced_accuracy": _mean(recall),
        "macro_auroc": _mean(auroc),
        "classes": {
            name: {"recall": recall[i], "precision": precision[i], "auroc": auroc[i], "n": int(support[i])}
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": confusion.tolist(),  # rows: truth; columns: prediction, in label order
        "n": len(truth),
    }


def task_metrics(
    task: Task, y_true: np.ndarray, prob: np.ndarray, thresholds: Mapping[str, float], label_names: Sequence[str]
) -> dict[str, Any]:
    """Binary: `binary_metrics` of the one label. Multi-label: per label at its threshold, plus macro
    AUROC and average precision. Multi-class: `multiclass_metrics`."""
    if task is Task.BINARY:
        return binary_metrics(y_true[:, 0], prob[:, 0], thresholds[label_names[0]])
    if task is Task.MULTICLASS:
        return multiclass_metrics(y_true, prob, label_names)
    per_label = {
        name: binary_metrics(y_true[:, j], prob[:, j], thresholds[name]) for j, name in enumerate(label_names)
    }
    return {
        "macro_auroc": _mean([m["auroc"] for m in per_label.values()]),
        "macro_average_precision": _mean([m["average_precision"] for m in per_label.values()]),
        "accuracy": _mean([m["accuracy"] for m in per_label.values()]),  # mean over labels
        "labels": per_label,
        "n": len(y_true),
    }


def primary_score(task: Task, metrics: Mapping[str, Any]) -> float | None:
    """What model selection maximises: AUROC (binary), macro AUROC (multi-label), balanced accuracy (multi-class)."""
    key = {Task.BINARY: "auroc", Task.MULTILABEL: "macro_auroc", Task.MULTICLASS: "balanced_accuracy"}[task]
    value = metrics.get(key)
    return None if value is None else float(value)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
