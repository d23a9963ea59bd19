"""Calibration: expected calibration error, reliability bins, and temperature scaling fitted on validation.

numpy, scipy and scikit-learn only (no torch), so export can check a calibrated ONNX model with the same code.
Binary and multi-label columns are calibrated as independent sigmoids; multi-class as one softmax
(confidence = the top probability, correct = the top class is the truth).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.metrics import log_loss

DEFAULT_BINS = 15
_EPS = 1e-7
TEMPERATURE_RANGE = (0.05, 20.0)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = DEFAULT_BINS) -> dict[str, list]:
    """Equal-width bins over [0, 1]: per bin the sample count, mean confidence and observed frequency.

    Empty bins have None for the means. `confidence` is a probability per sample, `correct` 0/1.
    """
    if bins < 1:
        raise ValueError(f"calibration bins must be >= 1, got {bins}")
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=np.float64).ravel()
    index = np.clip(np.floor(confidence * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    hit_sum = np.bincount(index, weights=correct, minlength=bins)
    return {
        "edges": np.linspace(0.0, 1.0, bins + 1).tolist(),
        "count": counts.tolist(),
        "mean_confidence": [float(c / n) if n else None for c, n in zip(conf_sum, counts, strict=True)],
        "frequency": [float(h / n) if n else None for h, n in zip(hit_sum, counts, strict=True)],
    }


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = DEFAULT_BINS) -> float:
    """ECE = sum over bins of (bin share of samples) x |observed frequency - mean confidence|."""
    table = reliability_bins(confidence, correct, bins)
    total = sum(table["count"])
    if total == 0:
        raise ValueError("expected calibration error needs at least one sample")
    gaps = [
        n * abs(f - c)
        for n, f, c in zip(table["count"], table["frequency"], table["mean_confidence"], strict=True)
        if n
    ]
    return float(sum(gaps) / total)


def confidence_and_outcome(y_true: np.ndarray, prob: np.ndarray, multiclass: bool) -> tuple[np.ndarray, np.ndarray]:
    """What the reliability diagram plots: per known label entry (sigmoid) its probability and whether it is
    positive; per known row (softmax) the top probability and whether the top class is right."""
    y, p = np.asarray(y_true, dtype=np.float64), np.asarray(prob, dtype=np.float64)
    if multiclass:
        known = ~np.isnan(y).any(axis=1)
        top = p[known].argmax(axis=1)
        return p[known].max(axis=1), (top == y[known].argmax(axis=1)).astype(np.float64)
    known = ~np.isnan(y)
    return p[known], (y[known] >= 0.5).astype(np.float64)


def logits_of(prob: np.ndarray, multiclass: bool) -> np.ndarray:
    """Logits that give back `prob`: log-odds per sigmoid column, log-probabilities for a softmax."""
    p = np.clip(np.asarray(prob, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) if multiclass else np.log(p) - np.log1p(-p)


def apply_temperature(prob: np.ndarray, temperature: float, multiclass: bool) -> np.ndarray:
    """Probabilities after dividing the logits by `temperature` (ranking and arg-max are unchanged)."""
    z = logits_of(prob, multiclass) / temperature
    if multiclass:
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-z))


def fit_temperature(y_true: np.ndarray, prob: np.ndarray, multiclass: bool) -> float:
    """The temperature T in TEMPERATURE_RANGE minimising the validation log loss (scikit-learn's) of logits / T."""
    y = np.asarray(y_true, dtype=np.float64)

    def loss(temperature: float) -> float:
        scaled = apply_temperature(prob, temperature, multiclass)
        if multiclass:
            known = ~np.isnan(y).any(axis=1)
            return float(log_loss(y[known].argmax(axis=1), scaled[known], labels=list(range(y.shape[1]))))
        known = ~np.isnan(y)
        return float(log_loss(y[known] >= 0.5, scaled[known], labels=[False, True]))

    result = minimize_scalar(loss, bounds=TEMPERATURE_RANGE, method="bounded", options={"xatol": 1e-4})
    return float(result.x)


def calibration_summary(
    y_true: np.ndarray, prob: np.ndarray, multiclass: bool, bins: int = DEFAULT_BINS
) -> dict[str, Any]:
    """ECE and the reliability table of one split."""
    confidence, correct = confidence_and_outcome(y_true, prob, multiclass)
    if confidence.size == 0:
        return {"ece": None, "bins": bins, "reliability": None}
    return {
        "ece": expected_calibration_error(confidence, correct, bins),
        "bins": bins,
        "reliability": reliability_bins(confidence, correct, bins),
    }
