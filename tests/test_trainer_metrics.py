"""Metrics, threshold choice, the class-balanced loss and the LR schedule, against hand-computed values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from trainer.config import OptimConfig
from trainer.loss import MaskedWeightedBCE, balance_weights
from trainer.metrics import binary_metrics
from trainer.optim import build_scheduler
from trainer.thresholds import choose_threshold

Y = np.array([0, 0, 1, 1, 1], dtype=np.float32)
P = np.array([0.1, 0.6, 0.4, 0.8, 0.9])


def test_binary_metrics_match_hand_computation() -> None:
    m = binary_metrics(Y, P, threshold=0.5)
    # predictions [0, 1, 0, 1, 1]: TP 2, FP 1, TN 1, FN 1
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["sensitivity"] == m["recall"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # 6 (positive, negative) pairs; only (0.4, 0.6) is ranked wrongly
    assert m["auroc"] == pytest.approx(5 / 6)
    assert (m["n"], m["positives"], m["threshold"]) == (5, 3, 0.5)


def test_binary_metrics_edge_cases() -> None:
    with_unknown = binary_metrics(np.append(Y, np.nan), np.append(P, 0.99), threshold=0.5)
    assert with_unknown == binary_metrics(Y, P, threshold=0.5)  # NaN labels are ignored
    one_class = binary_metrics(np.ones(3), np.array([0.2, 0.7, 0.9]), threshold=0.5)
    assert one_class["auroc"] is None and one_class["specificity"] is None
    assert one_class["sensitivity"] == pytest.approx(2 / 3)
    nothing_predicted = binary_metrics(Y, P, threshold=0.95)
    assert nothing_predicted["precision"] is None and nothing_predicted["f1"] == 0.0


def youden(y: np.ndarray, p: np.ndarray, t: float) -> float:
    m = binary_metrics(y, p, t)
    return m["sensitivity"] + m["specificity"] - 1


def test_youden_threshold_is_optimal_and_between_scores() -> None:
    t = choose_threshold(Y, P, "youden")
    # J at each cut-off: >=0.9: 1/3, >=0.8: 2/3, >=0.6: 1/6, >=0.4: 1/2, >=0.1: 0. Best 0.8; next lower score 0.6.
    assert t == pytest.approx(0.7)
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300).astype(np.float64)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.2, 300), 0, 1)
    t = choose_threshold(y, p, "youden")
    assert 0.0 <= t <= 1.0
    assert youden(y, p, t) == pytest.approx(max(youden(y, p, c) for c in np.unique(p)))


def test_f1_and_fixed_policies() -> None:
    # F1 at >=0.4 (all three positives, one FP) = 6/7 beats >=0.8 (= 4/5)
    assert choose_threshold(Y, P, "f1") == pytest.approx(0.25)
    assert choose_threshold(Y, P, "fixed", value=0.3) == 0.3
    assert choose_threshold(np.ones(4), np.linspace(0, 1, 4), "youden") == 0.5  # one class: the fixed value
    allowed = r"Only youden, balanced, fbeta, f1, sensitivity, fixed"
    with pytest.raises(ValueError, match=rf"Invalid threshold policy 'accuracy'\. {allowed}"):
        choose_threshold(Y, P, "accuracy")


def test_balance_weights_formula() -> None:
    labels = np.array([[1, 0], [0, np.nan], [0, 1], [0, 1]], dtype=np.float32)
    w_pos, w_neg = balance_weights(labels)
    # column 0: P=1, N=3 -> w+ = 3/4, w- = 1/4; column 1: P=2, N=1 (NaN ignored) -> w+ = 1/3, w- = 2/3
    np.testing.assert_allclose(w_pos, [3 / 4, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(w_neg, [1 / 4, 2 / 3], rtol=1e-6)


def test_weighted_loss_on_known_example_and_nan_mask() -> None:
    loss = MaskedWeightedBCE(np.array([0.75]), np.array([0.25]))
    logits = torch.tensor([[2.0], [-1.0], [0.5], [0.0]])
    targets = torch.tensor([[1.0], [0.0], [0.0], [0.0]])

    def bce(x: float, y: float) -> float:
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    expected = (0.75 * bce(2, 1) + 0.25 * bce(-1, 0) + 0.25 * bce(0.5, 0) + 0.25 * bce(0, 0)) / 4
    assert loss(logits, targets).item() == pytest.approx(expected, rel=1e-6)
    # An unknown label adds nothing and is not counted.
    masked = loss(torch.cat([logits, torch.tensor([[3.0]])]), torch.cat([targets, torch.tensor([[float("nan")]])]))
    assert masked.item() == pytest.approx(expected, rel=1e-6)
    smoothed = MaskedWeightedBCE(np.array([1.0]), np.array([1.0]), label_smoothing=0.2)
    assert smoothed(torch.tensor([[0.0]]), torch.tensor([[1.0]])).item() == pytest.approx(bce(0, 0.9), rel=1e-6)


def test_warmup_then_cosine_schedule() -> None:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = build_scheduler(optimizer, OptimConfig(lr=1e-3, warmup_epochs=1, min_lr=1e-5), 4, 3)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lrs[-1] == pytest.approx(1e-5)
    assert all(a >= b for a, b in itertools.pairwise(lrs[3:]))


def test_balanced_policy_equalises_sensitivity_and_specificity() -> None:
    # |sens - spec| at each cut-off: >=0.9: 2/3, >=0.8: 1/3, >=0.6: 1/6, >=0.4: 1/2, >=0.1: 1. Best 0.6; next 0.4.
    assert choose_threshold(Y, P, "balanced") == pytest.approx(0.5)
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400).astype(np.float64)
    p = np.clip(0.3 * y + rng.normal(0.35, 0.2, 400), 0, 1)
    m = binary_metrics(y, p, choose_threshold(y, p, "balanced"))
    gaps = [abs(binary_metrics(y, p, c)["sensitivity"] - binary_metrics(y, p, c)["specificity"]) for c in np.unique(p)]
    assert abs(m["sensitivity"] - m["specificity"]) == pytest.approx(min(gaps))
