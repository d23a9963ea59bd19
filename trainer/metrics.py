"""Clinical classification metrics from labels and probabilities: numpy and scikit-learn only.

No torch here, so export can score an ONNX model's outputs with exactly these functions. Every
number comes from scikit-learn; this module only picks the rows with known labels and names the
results. Ratios with a zero denominator and ranking metrics on a one-class sample are None.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    fbeta_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from medcore.record import Task
from trainer.thresholds import drop_unknown

DEFAULT_BETA = 2.0  # screening: a missed case costs more than a false alarm


def binary_metrics(
    y_true: np.ndarray, prob: np.ndarray, threshold: float, *, beta: float = DEFAULT_BETA
) -> dict[str, Any]:
    """Metrics of one binary label at `threshold` (positive iff prob >= threshold); NaN labels are ignored.

    `fbeta` weighs recall `beta` times as much as precision. Plain Python types only.
    """
    y, p = drop_unknown(y_true, prob)
    truth = (y >= 0.5).astype(np.int64)
    pred = (p >= threshold).astype(np.int64)
    (tn, fp), (fn, tp) = confusion_matrix(truth, pred, labels=[0, 1]).tolist()
    both_classes = 0 < tp + fn < len(y)
    predicted = tp + fp > 0
    with warnings.catch_warnings():  # an undefined ratio is reported as None below, not warned about
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        sensitivity = float(recall_score(truth, pred, zero_division=0.0)) if tp + fn else None
        specificity = float(recall_score(truth, pred, pos_label=0, zero_division=0.0)) if tn + fp else None
        precision = float(precision_score(truth, pred, zero_division=0.0)) if predicted else None
        any_positive = tp + fp + fn > 0
        f1 = float(f1_score(truth, pred, zero_division=0.0)) if any_positive else None
        fbeta = float(fbeta_score(truth, pred, beta=beta, zero_division=0.0)) if any_positive else None
        balanced = float(balanced_accuracy_score(truth, pred)) if both_classes else None
    return {
        "auroc": float(roc_auc_score(truth, p)) if both_classes else None,
        "average_precision": float(average_precision_score(truth, p)) if both_classes else None,
        "accuracy": float(accuracy_score(truth, pred)) if len(y) else None,
        "balanced_accuracy": balanced,
        "f1": f1,
        "fbeta": fbeta,
        "beta": float(beta),
        "precision": precision,
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


def multiclass_metrics(y_true: np.ndarray, prob: np.ndarray, label_names: Sequence[str]) -> dict[str, Any]:
    """One-hot labels (rows with NaN are unknown and ignored) and class probabilities [N, K].

    Prediction is the most probable class. Balanced accuracy is the mean recall over the classes
    present (the reference microscopy task's score); AUROC is one-vs-rest per class and its mean.
    """
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(prob, dtype=np.float64)
    known = ~np.isnan(y).any(axis=1)
    truth, pred, p = y[known].argmax(axis=1), p[known].argmax(axis=1), p[known]
    k = len(label_names)
    classes = list(range(k))
    confusion = confusion_matrix(truth, pred, labels=classes)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        recall = recall_score(truth, pred, labels=classes, average=None, zero_division=0.0)
        precision = precision_score(truth, pred, labels=classes, average=None, zero_division=0.0)
        f1 = f1_score(truth, pred, labels=classes, average=None, zero_division=0.0)
    auroc = [float(roc_auc_score(truth == i, p[:, i])) if 0 < support[i] < len(truth) else None for i in classes]
    per_class = {
        name: {
            "recall": float(recall[i]) if support[i] else None,
            "precision": float(precision[i]) if predicted[i] else None,
            "f1": float(f1[i]) if support[i] + predicted[i] else None,
            "auroc": auroc[i],
            "n": int(support[i]),
        }
        for i, name in enumerate(label_names)
    }
    return {
        "accuracy": float(accuracy_score(truth, pred)) if len(truth) else None,
        "balanced_accuracy": float(balanced_accuracy_score(truth, pred)) if len(truth) else None,
        "macro_f1": _mean([c["f1"] for c in per_class.values()]),
        "macro_auroc": _mean(auroc),
        "classes": per_class,
        "confusion_matrix": confusion.tolist(),  # rows: truth; columns: prediction, in label order
        "n": len(truth),
    }


def multilabel_metrics(
    y_true: np.ndarray,
    prob: np.ndarray,
    thresholds: Mapping[str, float],
    label_names: Sequence[str],
    *,
    beta: float = DEFAULT_BETA,
) -> dict[str, Any]:
    """Per label at its threshold, the macro means, and the two multi-label "accuracies" named apart.

    `label_accuracy` is the mean over labels of each label's accuracy (1 - Hamming loss on known
    entries); `subset_accuracy` is the share of images whose every known label is right (exact match,
    over images with all labels known).
    """
    y = np.asarray(y_true, dtype=np.float64)
    per_label = {
        name: binary_metrics(y[:, j], prob[:, j], thresholds[name], beta=beta) for j, name in enumerate(label_names)
    }
    cut = np.asarray([thresholds[name] for name in label_names])
    complete = ~np.isnan(y).any(axis=1)
    exact = accuracy_score(y[complete] >= 0.5, np.asarray(prob)[complete] >= cut) if complete.any() else None
    return {
        "macro_auroc": _mean([m["auroc"] for m in per_label.values()]),
        "macro_average_precision": _mean([m["average_precision"] for m in per_label.values()]),
        "macro_f1": _mean([m["f1"] for m in per_label.values()]),
        "macro_fbeta": _mean([m["fbeta"] for m in per_label.values()]),
        "label_accuracy": _mean([m["accuracy"] for m in per_label.values()]),
        "subset_accuracy": None if exact is None else float(exact),
        "beta": float(beta),
        "labels": per_label,
        "n": len(y),
    }


def task_metrics(
    task: Task,
    y_true: np.ndarray,
    prob: np.ndarray,
    thresholds: Mapping[str, float],
    label_names: Sequence[str],
    *,
    beta: float = DEFAULT_BETA,
) -> dict[str, Any]:
    """Binary: `binary_metrics` of its one label; multi-label: `multilabel_metrics`; else `multiclass_metrics`."""
    if task is Task.BINARY:
        return binary_metrics(y_true[:, 0], prob[:, 0], thresholds[label_names[0]], beta=beta)
    if task is Task.MULTICLASS:
        return multiclass_metrics(y_true, prob, label_names)
    return multilabel_metrics(y_true, prob, thresholds, label_names, beta=beta)


def primary_score(task: Task, metrics: Mapping[str, Any]) -> float | None:
    """What model selection maximises: AUROC (binary), macro AUROC (multi-label), balanced accuracy (multi-class)."""
    key = {Task.BINARY: "auroc", Task.MULTILABEL: "macro_auroc", Task.MULTICLASS: "balanced_accuracy"}[task]
    value = metrics.get(key)
    return None if value is None else float(value)


def headline_accuracy(metrics: Mapping[str, Any]) -> float | None:
    """Accuracy for logs and history rows: plain accuracy, or `label_accuracy` for multi-label."""
    value = metrics.get("accuracy", metrics.get("label_accuracy"))
    return None if value is None else float(value)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
