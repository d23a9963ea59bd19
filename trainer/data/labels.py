"""Label rows from names, and the counts and weights derived from a label matrix.

Binary and multi-label: one column per label, 1 / 0 / NaN (unknown). Multi-class: a one-hot row
over the classes, or a row of NaN when the class is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from medcore.record import Task

# A multi-label row naming only this says "all labels negative" (NIH's own spelling; case-insensitive).
NO_FINDING = "no finding"


def names_row(names: Sequence[str], label_names: Sequence[str], *, multilabel: bool) -> list[float] | str:
    """The label row of a sample named by `names`, or the first name that is not a label.

    Single-label: exactly one name, a one-hot row over `label_names` (a two-class row becomes a
    binary one in `to_binary`). Multi-label: any number of names; "No Finding" alone means all
    negative. An empty `names` is an unknown (all-NaN) row.
    """
    if not names:
        return [math.nan] * len(label_names)
    index = {name: i for i, name in enumerate(label_names)}
    if multilabel and len(names) == 1 and names[0].lower() == NO_FINDING and names[0] not in index:
        return [0.0] * len(label_names)
    if not multilabel and len(names) != 1:
        return "|".join(names)
    row = [0.0] * len(label_names)
    for name in names:
        if name not in index:
            return name
        row[index[name]] = 1.0
    return row


def to_binary(labels: np.ndarray) -> np.ndarray:
    """One-hot rows over (negative, positive) -> float32 [N, 1] of the positive column; NaN stays NaN."""
    if labels.shape[1] != 2:
        raise ValueError(f"a binary task needs two classes, got {labels.shape[1]}")
    return np.ascontiguousarray(labels[:, 1:2], dtype=np.float32)


def label_counts(labels: np.ndarray, label_names: Sequence[str], task: Task) -> dict[str, dict[str, int]]:
    """Per label: positives, negatives and unknowns (for multi-class: samples of each class and unknown rows)."""
    labels = np.asarray(labels, dtype=np.float32)
    known = ~np.isnan(labels)
    positive = (known & (labels >= 0.5)).sum(axis=0)
    negative = (known & (labels < 0.5)).sum(axis=0)
    unknown = (~known).sum(axis=0)
    return {
        name: {"positive": int(positive[i]), "negative": int(negative[i]), "unknown": int(unknown[i])}
        for i, name in enumerate(label_names)
    }


def label_weights(labels: np.ndarray, label_names: Sequence[str], task: Task) -> dict[str, float | None]:
    """Binary/multi-label: positive weight negatives/positives per label (as BCE's `pos_weight`).

    Multi-class: class weight known / (classes * count), so that every class weighs the same.
    None where a label has no positives (or no negatives) in `labels`.
    """
    counts = label_counts(labels, label_names, task)
    if task is Task.MULTICLASS:
        known_rows = int((~np.isnan(np.asarray(labels)).any(axis=1)).sum()) if len(labels) else 0
        return {
            name: (known_rows / (len(label_names) * c["positive"]) if c["positive"] else None)
            for name, c in counts.items()
        }
    return {
        name: (c["negative"] / c["positive"] if c["positive"] and c["negative"] else None) for name, c in counts.items()
    }


def label_report(labels: np.ndarray, label_names: Sequence[str], task: Task) -> dict[str, Any]:
    """Counts and weights per label, rounded for a JSON report."""
    weights = label_weights(labels, label_names, task)
    key = "class_weight" if task is Task.MULTICLASS else "pos_weight"
    return {
        name: {**counts, key: None if weights[name] is None else round(float(weights[name] or 0.0), 4)}
        for name, counts in label_counts(labels, label_names, task).items()
    }
