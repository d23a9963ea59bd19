"""Class-balanced losses on logits with unknown (NaN) labels masked out: BCE per label, CE for multi-class."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from medcore.record import Task


def balance_weights(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per label column: w+ = |N| / (|P| + |N|) and w- = |P| / (|P| + |N|), ignoring NaN.

    The rarer class gets the larger weight, so both classes contribute equally to the loss.
    A column with only one known class falls back to 0.5 / 0.5.
    """
    labels = np.asarray(labels, dtype=np.float64)
    positives = np.nansum(labels, axis=0)
    known = (~np.isnan(labels)).sum(axis=0)
    negatives = known - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        w_pos = np.where((positives > 0) & (negatives > 0), negatives / known, 0.5)
        w_neg = np.where((positives > 0) & (negatives > 0), positives / known, 0.5)
    return w_pos.astype(np.float32), w_neg.astype(np.float32)


class MaskedWeightedBCE(nn.Module):
    """mean over known entries of w(y) * BCE(logit, y'), where y' is y after label smoothing.

    w(y) is `pos_weight` for positives and `neg_weight` for negatives (per label column);
    entries whose label is NaN contribute nothing and are not counted.
    """

    pos_weight: torch.Tensor
    neg_weight: torch.Tensor

    def __init__(self, pos_weight: np.ndarray, neg_weight: np.ndarray, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("pos_weight", torch.as_tensor(pos_weight, dtype=torch.float32))
        self.register_buffer("neg_weight", torch.as_tensor(neg_weight, dtype=torch.float32))
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(targets)
        targets = torch.where(known, targets, torch.zeros_like(targets))
        weights = torch.where(targets >= 0.5, self.pos_weight, self.neg_weight) * known
        smoothed = targets * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        losses = F.binary_cross_entropy_with_logits(logits.float(), smoothed, reduction="none")
        return (losses * weights).sum() / known.sum().clamp(min=1)


class MaskedCrossEntropy(nn.Module):
    """Multi-class: softmax cross-entropy over one-hot targets, weighted per class; unknown (NaN) rows are masked.

    With balanced `class_weight` (known / (classes * count)) every class contributes equally.
    """

    class_weight: torch.Tensor

    def __init__(self, class_weight: np.ndarray, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("class_weight", torch.as_tensor(class_weight, dtype=torch.float32))
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(targets).any(dim=1)
        classes = torch.nan_to_num(targets, nan=0.0).argmax(dim=1)
        losses = F.cross_entropy(
            logits.float(), classes, weight=self.class_weight, label_smoothing=self.label_smoothing, reduction="none"
        )
        return (losses * known).sum() / known.sum().clamp(min=1)


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Multi-class: known / (classes * count) per class over the known rows; 1 for a class with no samples."""
    labels = np.asarray(labels, dtype=np.float64)
    known = labels[~np.isnan(labels).any(axis=1)]
    counts = known.sum(axis=0)
    with np.errstate(divide="ignore"):
        weights = np.where(counts > 0, len(known) / (labels.shape[1] * counts), 1.0)
    return weights.astype(np.float32)


def build_criterion(task: Task, train_labels: np.ndarray, label_smoothing: float = 0.0) -> nn.Module:
    """The task's loss, balanced on the training labels: masked CE (multi-class) or masked weighted BCE."""
    if task is Task.MULTICLASS:
        return MaskedCrossEntropy(class_weights(train_labels), label_smoothing)
    w_pos, w_neg = balance_weights(train_labels)
    return MaskedWeightedBCE(w_pos, w_neg, label_smoothing)
