"""Turn model probabilities into per-label decisions using the record's thresholds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medcore.record import ModelRecord, Task


@dataclass(frozen=True)
class LabelDecision:
    label: str
    probability: float
    threshold: float
    positive: bool


def decide(probabilities: np.ndarray, record: ModelRecord) -> list[list[LabelDecision]]:
    """probabilities [N, L] -> for each image, one decision per label.

    Binary and multi-label: a label is positive when its probability reaches its threshold.
    Multi-class: exactly one label, the most probable, is positive.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != record.num_outputs:
        raise ValueError(f"expected probabilities of shape [N, {record.num_outputs}], got {list(probs.shape)}")
    thresholds = np.array([record.thresholds[label] for label in record.labels])
    if record.task is Task.MULTICLASS:
        positive = np.zeros_like(probs, dtype=bool)
        positive[np.arange(len(probs)), probs.argmax(axis=1)] = True
    else:
        positive = probs >= thresholds
    return [
        [
            LabelDecision(label, float(p), float(t), bool(pos))
            for label, p, t, pos in zip(record.labels, row, thresholds, flags, strict=True)
        ]
        for row, flags in zip(probs, positive, strict=True)
    ]
