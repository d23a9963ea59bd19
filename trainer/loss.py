"""Class-balanced binary cross-entropy on logits, with unknown (NaN) labels masked out."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


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
