"""Choose a decision threshold on validation predictions. numpy only (no torch), so export can use it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

THRESHOLD_POLICIES = ("youden", "balanced", "fbeta", "f1", "sensitivity", "fixed")
# The policies whose test metrics the report shows side by side ("fixed" at its value).
COMPARED_POLICIES = ("youden", "balanced", "fbeta", "sensitivity", "fixed")


@dataclass(frozen=True)
class ThresholdRule:
    """A policy and its parameters: `beta` (fbeta), `target` sensitivity (sensitivity), `value` (fixed, fallback)."""

    policy: str = "youden"
    value: float = 0.5
    beta: float = 2.0
    target: float = 0.95

    def __post_init__(self) -> None:
        if self.policy not in THRESHOLD_POLICIES:
            raise ValueError(
                f"Invalid threshold policy {self.policy!r}. Only {', '.join(THRESHOLD_POLICIES)} are supported."
            )
        if self.beta <= 0:
            raise ValueError(f"threshold beta must be > 0, got {self.beta}")
        if not 0.0 < self.target <= 1.0:
            raise ValueError(f"target sensitivity must lie in (0, 1], got {self.target}")


def choose_threshold(
    y_true: np.ndarray,
    prob: np.ndarray,
    policy: str = "youden",
    value: float = 0.5,
    *,
    beta: float = 2.0,
    target: float = 0.95,
) -> float:
    """The threshold t (positive iff prob >= t) that maximises the policy's criterion.

    "youden": sensitivity + specificity - 1; "balanced": sensitivity closest to specificity (the
    equal-error point; steadier than Youden's J when validation scores separate almost perfectly);
    "fbeta": F-beta of the positive class (beta > 1 favours recall); "f1": F-beta with beta 1;
    "sensitivity": the highest threshold whose sensitivity reaches `target` (the most specific
    operating point that still finds that share of cases); "fixed": `value`.
    The result lies halfway between the chosen cut-off score and the next lower score, so it
    classifies the given data exactly as the cut-off does while leaving a margin either side.
    Labels that are NaN are ignored; with only one class present, `value` is returned.
    """
    ThresholdRule(policy, value, beta, target)  # validates
    y, p = drop_unknown(y_true, prob)
    positives = float(y.sum())
    negatives = float(len(y) - positives)
    if policy == "fixed" or positives == 0 or negatives == 0:
        return float(value)
    order = np.argsort(-p, kind="stable")
    scores, labels = p[order], y[order]
    # Last index of each run of equal scores: cutting there puts the whole run on the positive side.
    ends = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tp = np.cumsum(labels)[ends]
    fp = np.cumsum(1.0 - labels)[ends]
    sensitivity, specificity = tp / positives, 1.0 - fp / negatives
    b = 1.0 if policy == "f1" else beta
    criteria = {
        "youden": sensitivity + specificity - 1.0,
        "balanced": -np.abs(sensitivity - specificity),
        "fbeta": (1 + b * b) * tp / ((1 + b * b) * tp + b * b * (positives - tp) + fp),
        "f1": (1 + b * b) * tp / ((1 + b * b) * tp + b * b * (positives - tp) + fp),
        # Cut-offs are in descending score order, so the first one reaching the target is the most specific.
        "sensitivity": (sensitivity >= target - 1e-12).astype(np.float64),
    }
    best = int(np.argmax(criteria[policy]))
    upper = float(scores[ends[best]])
    lower = float(scores[ends[best + 1]]) if best + 1 < len(ends) else 0.0
    return float(np.clip((upper + lower) / 2.0, 0.0, 1.0))


def drop_unknown(y_true: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten both to float64 and drop the pairs whose label is NaN (unknown)."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true has {y.size} values, prob has {p.size}")
    known = ~np.isnan(y)
    return y[known], p[known]


def choose_thresholds(
    multiclass: bool,
    y_true: np.ndarray,
    prob: np.ndarray,
    labels: Sequence[str],
    policy: str,
    value: float,
    *,
    beta: float = 2.0,
    target: float = 0.95,
) -> dict[str, float]:
    """A threshold per label, each chosen on its own column. Multi-class decides by the most probable
    class, so every label gets `value` (the record still names one per label)."""
    if multiclass:
        return {label: float(value) for label in labels}
    return {
        label: choose_threshold(y_true[:, j], prob[:, j], policy, value, beta=beta, target=target)
        for j, label in enumerate(labels)
    }
