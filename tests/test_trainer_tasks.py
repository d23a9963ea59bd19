"""Multi-class and multi-label training: loss, metrics and thresholds by hand, then short real runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import CHANNELS, build_microscopy, build_nih, covid_images, kermany_images, microscopy_stacks
from torch.nn import functional as F
from trainer_support import QUICK_FLAGS

from medcore.record import Task
from trainer.checkpoint import load_checkpoint
from trainer.cli import main
from trainer.data.nih import NIH_LABELS
from trainer.loss import MaskedCrossEntropy, MaskedWeightedBCE, build_criterion, class_weights
from trainer.metrics import multiclass_metrics, primary_score, task_metrics
from trainer.thresholds import choose_thresholds

NAN = math.nan
ONE_HOT = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [NAN, NAN, NAN]], dtype=np.float32)
PROB = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.9, 0.05, 0.05]])


def test_multiclass_metrics_by_hand() -> None:
    m = multiclass_metrics(ONE_HOT, PROB, ("a", "b", "c"))
    # Known rows 0-3: truth a a b c, predicted a b b c. Recall a 1/2, b 1, c 1.
    assert m["n"] == 4 and m["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(3 / 4)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert m["classes"]["a"]["precision"] == pytest.approx(1.0) and m["classes"]["b"]["precision"] == pytest.approx(0.5)
    assert primary_score(Task.MULTICLASS, m) == m["balanced_accuracy"]


def test_multilabel_metrics_macro_over_labels() -> None:
    y = np.array([[1, 0], [0, NAN], [1, 1], [0, 0]], dtype=np.float32)
    p = np.array([[0.9, 0.2], [0.1, 0.9], [0.8, 0.7], [0.3, 0.4]])
    thresholds = choose_thresholds(False, y, p, ("x", "y"), "youden", 0.5)
    m = task_metrics(Task.MULTILABEL, y, p, thresholds, ("x", "y"))
    assert m["labels"]["x"]["auroc"] == pytest.approx(1.0) and m["labels"]["y"]["n"] == 3
    assert m["macro_auroc"] == pytest.approx((m["labels"]["x"]["auroc"] + m["labels"]["y"]["auroc"]) / 2)
    assert choose_thresholds(True, ONE_HOT, PROB, ("a", "b", "c"), "youden", 0.5) == {"a": 0.5, "b": 0.5, "c": 0.5}


def test_masked_cross_entropy() -> None:
    logits = torch.tensor(np.log(PROB), dtype=torch.float32)
    targets = torch.from_numpy(ONE_HOT)
    loss = MaskedCrossEntropy(np.ones(3, dtype=np.float32))(logits, targets)
    expected = F.cross_entropy(logits[:4], torch.tensor([0, 0, 1, 2]))  # the unknown row adds nothing
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    weights = class_weights(ONE_HOT)
    assert weights.tolist() == pytest.approx([4 / 6, 4 / 3, 4 / 3])  # known / (classes * count)
    assert isinstance(build_criterion(Task.MULTICLASS, ONE_HOT), MaskedCrossEntropy)
    assert isinstance(build_criterion(Task.MULTILABEL, ONE_HOT), MaskedWeightedBCE)


FAST = [*QUICK_FLAGS, "--epochs", "2", "--set", "preprocessing.height=32", "--set", "preprocessing.width=32",
        "--set", "preprocessing.stats_samples=8"]  # fmt: skip


@pytest.mark.slow
def test_multilabel_run_on_the_nih_layout(tmp_path: Path, shared_data: Path) -> None:
    root = build_nih(tmp_path / "nih", kermany_images(shared_data) + covid_images(shared_data))
    output = tmp_path / "run"
    flags = ["--data-kind", "nih", "--data-path", str(root), "--val-fraction", "0.25", "--output-dir", str(output)]
    assert main(["train", *flags, *FAST, "--cache", "--cache-dir", str(tmp_path / "cache")]) == 0
    record = load_checkpoint(output / "best.pt").record
    assert record.task is Task.MULTILABEL and record.labels == NIH_LABELS and set(record.thresholds) == set(NIH_LABELS)
    metrics = json.loads((output / "metrics.json").read_text())
    assert set(metrics["test"]["labels"]) == set(NIH_LABELS)
    assert metrics["test"]["labels"]["Pneumonia"]["auroc"] is not None  # the only label with both classes
    assert metrics["test"]["macro_auroc"] == metrics["test"]["labels"]["Pneumonia"]["auroc"]
    assert (output / "roc.png").is_file() and list((tmp_path / "cache").glob("train-*.npy"))
    assert record.provenance.data["label_stats"]["Pneumonia"]["pos_weight"] is not None
    report = json.loads((output / "data_report.json").read_text())
    assert report["leakage"]["patients_in_several_splits"] == 0 and report["kind"] == "nih"


@pytest.mark.slow
def test_multiclass_run_on_stacked_microscopy_channels(tmp_path: Path, shared_data: Path) -> None:
    root = build_microscopy(tmp_path / "cells", microscopy_stacks(shared_data), "folders")
    output = tmp_path / "run"
    flags = ["--data-kind", "microscopy", "--data-path", str(root), "--channels", ",".join(CHANNELS),
             "--val-fraction", "0.25", "--test-fraction", "0.25", "--output-dir", str(output)]  # fmt: skip
    assert main(["train", *flags, *FAST]) == 0
    best = load_checkpoint(output / "best.pt")
    record = best.record
    assert record.task is Task.MULTICLASS and record.labels == ("covid", "normal", "viral")
    assert record.preprocessing.channels == 3 and record.preprocessing.channel_names == CHANNELS
    assert best.spec.in_channels == 3
    metrics = json.loads((output / "metrics.json").read_text())
    test = metrics["test"]
    assert test["n"] == 3 and 0.0 <= test["balanced_accuracy"] <= 1.0
    assert np.asarray(test["confusion_matrix"]).shape == (3, 3)
    assert (output / "confusion_matrix.png").is_file()
    assert metrics["history"][-1]["val_balanced_accuracy"] is not None
