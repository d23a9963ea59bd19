"""Clinical metrics, bootstrap intervals, calibration, threshold policies and the written report, by hand."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from medcore.record import Task
from trainer.calibration import apply_temperature, expected_calibration_error, fit_temperature, reliability_bins
from trainer.intervals import bootstrap_counts, ranking_draws, task_intervals
from trainer.metrics import binary_metrics, multiclass_metrics, multilabel_metrics
from trainer.report import ReportSettings, write_report
from trainer.temperature import fold_temperature
from trainer.tensorboard_log import log_epoch
from trainer.thresholds import choose_threshold

Y = np.array([0, 0, 1, 1, 1], dtype=np.float32)
P = np.array([0.1, 0.6, 0.4, 0.8, 0.9])


def test_fbeta_and_known_values() -> None:
    m = binary_metrics(Y, P, threshold=0.5, beta=2.0)
    # TP 2, FP 1, FN 1: F2 = 5 * 2 / (5 * 2 + 4 * 1 + 1) = 10 / 15
    assert m["fbeta"] == pytest.approx(10 / 15) and m["beta"] == 2.0
    assert binary_metrics(Y, P, 0.5, beta=1.0)["fbeta"] == pytest.approx(m["f1"])
    assert m["average_precision"] == pytest.approx((1 + 1 + 3 / 4) / 3)  # precision at each positive: 1, 1, 3/4


def test_multilabel_accuracies_are_named_apart() -> None:
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    p = np.array([[0.9, 0.2], [0.1, 0.4], [0.8, 0.7], [0.6, 0.1]])
    m = multilabel_metrics(y, p, {"a": 0.5, "b": 0.5}, ("a", "b"))
    # label a: 3/4 right (row 3 wrong); label b: 3/4 right (row 1 wrong). Rows all right: 0 and 2.
    assert m["label_accuracy"] == pytest.approx(3 / 4) and m["subset_accuracy"] == pytest.approx(1 / 2)
    assert "accuracy" not in m


def test_multiclass_macro_f1() -> None:
    one_hot = np.eye(3)[[0, 0, 1, 2]]
    prob = np.eye(3)[[0, 1, 1, 2]] * 0.8 + 0.05
    m = multiclass_metrics(one_hot, prob, ("a", "b", "c"))
    # a: P 1, R 1/2 -> F1 2/3; b: P 1/2, R 1 -> 2/3; c: 1
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_bootstrap_draws_equal_sklearn_on_the_explicit_resample() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(120) < 0.6).astype(np.float64)
    p = np.round(np.clip(0.3 * y + rng.normal(0.35, 0.2, 120), 0, 1), 2)  # rounded: many ties
    counts = next(bootstrap_counts(len(y), 5, seed=1))
    assert counts.shape == (5, 120) and (counts.sum(axis=1) == 120).all()
    auroc, ap = ranking_draws(y >= 0.5, p, counts)
    result = task_intervals(Task.BINARY, y[:, None], p[:, None], {"x": 0.5}, ("x",), resamples=5, seed=1)
    assert result["resamples"] == 5 and result["draws_used"]["auroc"] == 5
    for i in range(5):
        rows = np.repeat(np.arange(120), counts[i].astype(int))
        expected = binary_metrics(y[rows], p[rows], 0.5)
        assert auroc[i] == pytest.approx(expected["auroc"], abs=1e-12)
        assert ap[i] == pytest.approx(expected["average_precision"], abs=1e-12)


def test_bootstrap_interval_of_a_proportion_matches_the_normal_approximation() -> None:
    # 400 images, 320 classified right: accuracy 0.8, standard error sqrt(0.8 * 0.2 / 400) = 0.02,
    # so the 95% interval is about 0.8 +- 1.96 * 0.02 = [0.761, 0.839].
    y = np.ones((400, 1))
    p = np.r_[np.full(320, 0.9), np.full(80, 0.1)][:, None]
    result = task_intervals(Task.BINARY, y, p, {"x": 0.5}, ("x",), resamples=2000, seed=0)
    low, high = result["intervals"]["accuracy"]
    assert low == pytest.approx(0.761, abs=0.01) and high == pytest.approx(0.839, abs=0.01)
    assert result["intervals"]["auroc"] is None  # one class in every draw: undefined, not a number
    all_right = task_intervals(Task.BINARY, y, np.full((400, 1), 0.9), {"x": 0.5}, ("x",), resamples=50)
    assert all_right["intervals"]["sensitivity"] == [1.0, 1.0]
    with pytest.raises(ValueError, match="resamples must be >= 1, got 0"):
        task_intervals(Task.BINARY, y, p, {"x": 0.5}, ("x",), resamples=0)


def test_ece_by_hand_and_temperature() -> None:
    confidence = np.array([0.05, 0.15, 0.85, 0.95])
    correct = np.array([0, 1, 1, 1])
    # 10 bins: [0.0, 0.1): conf 0.05, freq 0; [0.1, 0.2): 0.15 vs 1; [0.8, 0.9): 0.85 vs 1; [0.9, 1]: 0.95 vs 1
    expected = (0.05 + 0.85 + 0.15 + 0.05) / 4
    assert expected_calibration_error(confidence, correct, bins=10) == pytest.approx(expected)
    assert reliability_bins(confidence, correct, bins=10)["count"] == [1, 1, 0, 0, 0, 0, 0, 0, 1, 1]
    rng = np.random.default_rng(0)
    logits = np.clip(rng.normal(0, 2, 4000), -4, 4)  # 3x stays within the float clip of 1e-7
    y = (rng.random(4000) < 1 / (1 + np.exp(-logits))).astype(np.float64)
    overconfident = 1 / (1 + np.exp(-3 * logits))  # logits three times too large
    temperature = fit_temperature(y, overconfident, multiclass=False)
    assert temperature == pytest.approx(3.0, rel=0.1)
    np.testing.assert_allclose(apply_temperature(overconfident, 3.0, False), 1 / (1 + np.exp(-logits)), atol=1e-6)


def test_fold_temperature_divides_the_logits() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.randn(3, 4)
    before = model(x).detach()
    fold_temperature(model, 2.5)
    torch.testing.assert_close(model(x).detach(), before / 2.5)


def test_fbeta_and_target_sensitivity_policies() -> None:
    # F2 at each cut-off: >=0.9: 5/17 (TP1 FN2), >=0.8: 10/18, >=0.6: 10/19, >=0.4: 15/16, >=0.1: 15/17.
    assert choose_threshold(Y, P, "fbeta", beta=2.0) == pytest.approx(0.25)
    # sensitivity >= 0.6 first reached at >= 0.8 (2/3); the next lower score is 0.6.
    assert choose_threshold(Y, P, "sensitivity", target=0.6) == pytest.approx(0.7)
    assert choose_threshold(Y, P, "sensitivity", target=1.0) == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"target sensitivity must lie in \(0, 1\], got 1.5"):
        choose_threshold(Y, P, "sensitivity", target=1.5)


def test_report_writes_tables_csv_and_figures(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    predictions = {}
    for name, prevalence in (("val", 0.74), ("test", 0.625)):
        y = (rng.random(200) < prevalence).astype(np.float32)[:, None]
        predictions[name] = (y, np.clip(0.35 * y + rng.normal(0.35, 0.18, y.shape), 0, 1))
    history = [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 0.5, "val_auroc": 0.8 + e / 100,
                "val_accuracy": 0.7, "lr": 1e-3 / (e + 1)} for e in range(3)]  # fmt: skip
    metrics = write_report(tmp_path, predictions, Task.BINARY, ("pneumonia",), {"pneumonia": 0.5},
                           {"task": "binary", "history": history}, ReportSettings(bootstrap=200))  # fmt: skip
    for name in ("metrics.json", "report.md", "history.csv", "roc.png", "pr.png", "confusion_matrix.png",
                 "calibration.png", "curves.png"):  # fmt: skip
        assert (tmp_path / name).is_file(), name
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert stored["test_intervals"]["resamples"] == 200 and stored["test"]["auroc"] == metrics["test"]["auroc"]
    low, high = stored["test_intervals"]["intervals"]["auroc"]
    assert low <= stored["test"]["auroc"] <= high
    policies = stored["threshold_policies"]
    assert set(policies) == {"youden", "balanced", "fbeta", "sensitivity", "fixed", "settings"}
    assert policies["sensitivity"]["val"]["sensitivity"] >= 0.95
    assert not math.isnan(stored["calibration"]["test"]["ece"])
    text = (tmp_path / "report.md").read_text()
    assert "| AUROC |" in text and "Youden's J" in text and "![ROC](roc.png)" in text and "200 resamples" in text
    rows = list(csv.DictReader((tmp_path / "history.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]


def test_tensorboard_is_optional(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    row = {"epoch": 0, "train_loss": 0.5, "val_auroc": 0.9, "val_balanced_accuracy": None}
    written = log_epoch(tmp_path, row)
    if importlib.util.find_spec("tensorboard") is None:
        assert written is False and "tensorboard is not installed" in caplog.text
    else:
        assert written is True and list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
