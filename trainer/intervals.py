"""Bootstrap confidence intervals for the test metrics: numpy and scikit-learn only (export reuses them).

Percentile bootstrap over images: `resamples` seeded draws of N images with replacement, at the
thresholds chosen on validation, and the (1 - level) / 2 and (1 + level) / 2 quantiles of each
metric. A draw is held as per-image counts (how often each image was drawn), and every draw is
scored at once from those counts: the threshold metrics as ratios of the weighted confusion counts,
AUROC and average precision from the weighted scores, as scikit-learn computes them with
`sample_weight` (1,000 draws take well under a second, where calling scikit-learn per draw takes
~15 s). Tests check each draw against `trainer.metrics` (scikit-learn) on the explicit resample.
A draw where a metric is undefined (one class only) is left out of that metric's interval; the
resample count and the draws used are stated in the result.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from medcore.record import Task
from trainer.metrics import DEFAULT_BETA

DEFAULT_RESAMPLES = 1000
_CHUNK_CELLS = 4_000_000  # resamples x images held in memory at once


def bootstrap_counts(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """[r, n] draw counts in chunks: row i counts how often each of the n images was drawn in resample i."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // max(1, n))
    done = 0
    while done < resamples:
        size = min(chunk, resamples - done)
        rows = rng.integers(0, n, size=(size, n))
        counts = np.zeros((size, n), dtype=np.float64)
        np.add.at(counts, (np.repeat(np.arange(size), n), rows.ravel()), 1.0)
        done += size
        yield counts


def binary_draws(truth: np.ndarray, prob: np.ndarray, threshold: float, counts: np.ndarray, beta: float) -> dict:
    """Per resample (rows of `counts`), the binary metrics of `trainer.metrics.binary_metrics`; NaN = undefined."""
    pos, pred = truth >= 0.5, prob >= threshold
    tp, fp = counts @ (pos & pred), counts @ (~pos & pred)
    fn, tn = counts @ (pos & ~pred), counts @ (~pos & ~pred)
    n = tp + fp + fn + tn
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity, specificity = _div(tp, tp + fn), _div(tn, tn + fp)
        b2 = beta * beta
        draws = {
            "accuracy": _div(tp + tn, n),
            "sensitivity": sensitivity,
            "specificity": specificity,
            "precision": _div(tp, tp + fp),
            "f1": _div(2 * tp, 2 * tp + fp + fn),
            "fbeta": _div((1 + b2) * tp, (1 + b2) * tp + b2 * fn + fp),
            "balanced_accuracy": (sensitivity + specificity) / 2,
        }
    auroc, ap = ranking_draws(pos, prob, counts)
    return {"auroc": auroc, "average_precision": ap, **draws}


def ranking_draws(pos: np.ndarray, prob: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and average precision per resample, as scikit-learn computes them with `sample_weight=counts[i]`.

    Scores are grouped by distinct value once; per draw, the weighted positives and negatives at each
    value give AUROC as the Mann-Whitney statistic (ties count half) and AP as the sum over
    descending thresholds of (recall step) x precision. NaN where a draw lacks a class.
    """
    values, group = np.unique(prob, return_inverse=True)
    order = np.arange(len(values))[::-1]  # descending score
    positives = np.zeros((len(counts), len(values)))
    negatives = np.zeros((len(counts), len(values)))
    np.add.at(positives.T, group[pos], counts[:, pos].T)
    np.add.at(negatives.T, group[~pos], counts[:, ~pos].T)
    total_pos, total_neg = positives.sum(axis=1), negatives.sum(axis=1)
    below = np.cumsum(negatives, axis=1) - negatives  # negatives scored strictly lower
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = (positives * (below + 0.5 * negatives)).sum(axis=1) / (total_pos * total_neg)
        tp, fp = np.cumsum(positives[:, order], axis=1), np.cumsum(negatives[:, order], axis=1)
        precision = np.nan_to_num(tp / (tp + fp))
        recall_step = positives[:, order] / total_pos[:, None]
        ap = (recall_step * precision).sum(axis=1)
    defined = (total_pos > 0) & (total_neg > 0)
    return np.where(defined, auroc, np.nan), np.where(defined, ap, np.nan)


def _div(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def _binary_task(y: np.ndarray, p: np.ndarray, threshold: float, counts: np.ndarray, beta: float) -> dict:
    known = ~np.isnan(y)
    return binary_draws(y[known], p[known], threshold, counts[:, known], beta)


def _multilabel_task(
    y: np.ndarray, p: np.ndarray, cut: np.ndarray, counts: np.ndarray, beta: float
) -> dict[str, np.ndarray]:
    per_label = [_binary_task(y[:, j], p[:, j], float(cut[j]), counts, beta) for j in range(y.shape[1])]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN draw is NaN, as wanted
        macro = {
            f"macro_{key}": np.nanmean(np.stack([d[key] for d in per_label]), axis=0)
            for key in ("auroc", "average_precision", "f1", "fbeta")
        }
        macro["label_accuracy"] = np.nanmean(np.stack([d["accuracy"] for d in per_label]), axis=0)
    complete = ~np.isnan(y).any(axis=1)
    exact = ((y[complete] >= 0.5) == (p[complete] >= cut)).all(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        macro["subset_accuracy"] = _div(counts[:, complete] @ exact, counts[:, complete].sum(axis=1))
    return macro


def _multiclass_task(y: np.ndarray, p: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    known = ~np.isnan(y).any(axis=1)
    truth, pred, p, counts = y[known].argmax(axis=1), p[known].argmax(axis=1), p[known], counts[:, known]
    recalls, f1s, aurocs = [], [], []
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(y.shape[1]):
            tp = counts @ ((truth == k) & (pred == k))
            support, predicted = counts @ (truth == k), counts @ (pred == k)
            recalls.append(_div(tp, support))
            f1s.append(_div(2 * tp, support + predicted))
            auroc, _ = ranking_draws(truth == k, p[:, k], counts)
            aurocs.append(auroc)
        return {
            "accuracy": _div(counts @ (truth == pred), counts.sum(axis=1)),
            "balanced_accuracy": np.nanmean(np.stack(recalls), axis=0),
            "macro_f1": np.nanmean(np.stack(f1s), axis=0),
            "macro_auroc": np.nanmean(np.stack(aurocs), axis=0),
        }


def task_intervals(
    task: Task,
    y_true: np.ndarray,
    prob: np.ndarray,
    thresholds: Mapping[str, float],
    label_names: Sequence[str],
    *,
    beta: float = DEFAULT_BETA,
    resamples: int = DEFAULT_RESAMPLES,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """{"method", "resamples", "level", "seed", "intervals": {metric: [low, high] | None}, "draws_used"}.

    Labels [N, L] (NaN unknown) and probabilities [N, L]; the metrics are the task's headline ones
    (binary: those of `binary_metrics`; multi-label: the macro means and accuracies; multi-class:
    accuracy, balanced accuracy, macro F1 and AUROC).
    """
    if resamples < 1:
        raise ValueError(f"bootstrap resamples must be >= 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must lie in (0, 1), got {level}")
    y, p = np.asarray(y_true, dtype=np.float64), np.asarray(prob, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 2:
        raise ValueError(f"y_true {y.shape} and prob {p.shape} must both be [N, labels]")
    cut = np.asarray([thresholds[name] for name in label_names], dtype=np.float64)
    chunks: list[dict[str, np.ndarray]] = []
    for counts in bootstrap_counts(len(y), resamples, seed):
        if task is Task.BINARY:
            chunks.append(_binary_task(y[:, 0], p[:, 0], float(cut[0]), counts, beta))
        elif task is Task.MULTICLASS:
            chunks.append(_multiclass_task(y, p, counts))
        else:
            chunks.append(_multilabel_task(y, p, cut, counts, beta))
    quantiles = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    intervals: dict[str, list[float] | None] = {}
    used: dict[str, int] = {}
    for key in chunks[0]:
        values = np.concatenate([chunk[key] for chunk in chunks])
        values = values[~np.isnan(values)]
        used[key] = int(values.size)
        intervals[key] = [float(q) for q in np.quantile(values, quantiles)] if values.size else None
    return {
        "method": "percentile bootstrap over images",
        "resamples": resamples,
        "level": level,
        "seed": seed,
        "intervals": intervals,
        "draws_used": used,
    }
