"""The evaluation report written after training: metrics.json, history.csv, the figures and report.md.

numpy, scikit-learn and matplotlib only (no torch). Everything is computed from (labels, probabilities)
per split and the thresholds chosen on validation, so export can rebuild it from an ONNX model's outputs.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medcore.atomic import atomic_write
from medcore.record import Task
from trainer.calibration import calibration_summary
from trainer.config import TrainConfig
from trainer.intervals import task_intervals
from trainer.metrics import task_metrics
from trainer.plots import plot_confusion, plot_history, plot_precision_recall, plot_reliability, plot_roc
from trainer.report_md import render_report
from trainer.thresholds import COMPARED_POLICIES, choose_thresholds

SplitPredictions = Mapping[str, tuple[np.ndarray, np.ndarray]]  # split name -> (y_true [N, L], prob [N, L])
HISTORY_FILE = "history.csv"


@dataclass(frozen=True)
class ReportSettings:
    """How the report is computed (the config's `report` and `threshold` sections)."""

    beta: float = 2.0
    target_sensitivity: float = 0.95
    fixed_value: float = 0.5
    bootstrap: int = 1000
    ci_level: float = 0.95
    bootstrap_seed: int = 0
    calibration_bins: int = 15

    @classmethod
    def from_config(cls, config: TrainConfig) -> ReportSettings:
        rule, report = config.threshold, config.report
        return cls(rule.beta, rule.target_sensitivity, rule.value, report.bootstrap, report.ci_level,
                   report.bootstrap_seed, report.calibration_bins)  # fmt: skip


def write_report(
    output_dir: Path,
    predictions: SplitPredictions,
    task: Task,
    labels: Sequence[str],
    thresholds: Mapping[str, float],
    extra: Mapping[str, Any],
    settings: ReportSettings | None = None,
) -> dict[str, Any]:
    """Write metrics.json, history.csv, the figures and report.md; return the metrics.

    `predictions` holds "val" and "test" (the last split is the one reported with intervals,
    under each threshold policy and in the confusion matrix). `extra` is merged into metrics.json
    (its "history" feeds history.csv and the training curves).
    """
    settings = settings or ReportSettings()
    with warnings.catch_warnings():  # library warnings (undefined ratios, matplotlib) never reach the log
        warnings.simplefilter("ignore")
        metrics = _metrics(predictions, task, labels, thresholds, extra, settings)
        text = json.dumps(metrics, indent=2) + "\n"
        atomic_write(output_dir / "metrics.json", lambda handle: handle.write(text.encode()))
        history = list(extra.get("history", []))
        if history:
            write_history(output_dir, history)
        figures = _plots(output_dir, predictions, task, labels, thresholds, metrics)
        markdown = render_report(metrics, figures)
        atomic_write(output_dir / "report.md", lambda handle: handle.write(markdown.encode()))
    return metrics


def _metrics(
    predictions: SplitPredictions,
    task: Task,
    labels: Sequence[str],
    thresholds: Mapping[str, float],
    extra: Mapping[str, Any],
    settings: ReportSettings,
) -> dict[str, Any]:
    head: dict[str, Any] = (
        {"label": labels[0], "threshold": thresholds[labels[0]]}
        if task is Task.BINARY
        else {"labels": list(labels), "thresholds": dict(thresholds)}
    )
    beta = settings.beta
    per_split = {name: task_metrics(task, y, p, thresholds, labels, beta=beta) for name, (y, p) in predictions.items()}
    last = list(predictions)[-1]
    y_last, p_last = predictions[last]
    intervals = task_intervals(task, y_last, p_last, thresholds, labels, beta=beta, resamples=settings.bootstrap,
                               level=settings.ci_level, seed=settings.bootstrap_seed)  # fmt: skip
    multiclass = task is Task.MULTICLASS
    calibration = {
        name: calibration_summary(y, p, multiclass, settings.calibration_bins) for name, (y, p) in predictions.items()
    }
    report: dict[str, Any] = {**head, **extra, **per_split, f"{last}_intervals": {**intervals, "split": last}}
    report["calibration"] = {**report.get("calibration", {}), **calibration}
    if not multiclass and "val" in predictions:
        report["threshold_policies"] = policy_comparison(predictions, task, labels, settings)
    return report


def policy_comparison(
    predictions: SplitPredictions, task: Task, labels: Sequence[str], settings: ReportSettings
) -> dict[str, Any]:
    """Per threshold policy: the thresholds it picks on val, and the metrics they give on val and test.

    Validation prevalence can differ from deployment's (PneumoniaMNIST: val 74% positive, test 62.5%),
    so one policy's val optimum is not the test optimum; this shows the trade-off side by side.
    """
    y_val, p_val = predictions["val"]
    result: dict[str, Any] = {}
    for policy in COMPARED_POLICIES:
        chosen = choose_thresholds(False, y_val, p_val, labels, policy, settings.fixed_value, beta=settings.beta,
                                   target=settings.target_sensitivity)  # fmt: skip
        result[policy] = {
            "thresholds": chosen,
            **{
                name: task_metrics(task, y, p, chosen, labels, beta=settings.beta)
                for name, (y, p) in predictions.items()
            },
        }
    result["settings"] = {
        "beta": settings.beta,
        "target_sensitivity": settings.target_sensitivity,
        "fixed": settings.fixed_value,
    }
    return result


HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_auroc", "val_accuracy", "val_balanced_accuracy",
                   "threshold", "lr", "images_per_second", "seconds")  # fmt: skip


def write_history(output_dir: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """history.csv: one row per epoch (epoch counted from 1), the columns of HISTORY_COLUMNS plus any others."""
    extra = sorted({key for row in history for key in row} - set(HISTORY_COLUMNS))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*HISTORY_COLUMNS, *extra], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({**row, "epoch": int(row["epoch"]) + 1})
    text = buffer.getvalue()
    atomic_write(output_dir / HISTORY_FILE, lambda handle: handle.write(text.encode()))


def _plots(
    output_dir: Path,
    predictions: SplitPredictions,
    task: Task,
    labels: Sequence[str],
    thresholds: Mapping[str, float],
    metrics: Mapping[str, Any],
) -> dict[str, str]:
    """Draw the figures; return {what: file name} for report.md."""
    last = list(predictions)[-1]
    figures: dict[str, str] = {}
    y, p = predictions[last]
    if task is Task.BINARY:
        label = labels[0]
        curves = {name: (yy[:, 0], pp[:, 0]) for name, (yy, pp) in predictions.items() if _both_classes(yy[:, 0])}
        title = f"{last}, threshold {thresholds[label]:.3f}"
        plot_confusion(metrics[last]["confusion_matrix"], (f"not {label}", label), output_dir / "confusion_matrix.png",
                       title=title)  # fmt: skip
        figures["confusion matrix"] = "confusion_matrix.png"
        roc_title, pr_title = f"ROC: {label}", f"precision-recall: {label}"
    else:
        if task is Task.MULTICLASS:  # the one-hot columns give one-vs-rest curves below
            plot_confusion(metrics[last]["confusion_matrix"], labels, output_dir / "confusion_matrix.png",
                           title=f"{last}, most probable class")  # fmt: skip
            figures["confusion matrix"] = "confusion_matrix.png"
        curves = {name: (y[:, j], p[:, j]) for j, name in enumerate(labels) if _both_classes(y[:, j])}
        roc_title, pr_title = f"ROC per label ({last})", f"precision-recall per label ({last})"
    if curves:
        plot_roc(curves, output_dir / "roc.png", title=roc_title)
        plot_precision_recall(curves, output_dir / "pr.png", title=pr_title)
        figures["ROC"], figures["precision-recall"] = "roc.png", "pr.png"
    calibration = {name: metrics["calibration"][name] for name in predictions if name in metrics["calibration"]}
    plot_reliability(calibration, output_dir / "calibration.png", title="reliability")
    figures["calibration"] = "calibration.png"
    history = metrics.get("history") or []
    if history:
        score_key = "val_balanced_accuracy" if task is Task.MULTICLASS else "val_auroc"
        plot_history(history, score_key, output_dir / "curves.png")
        figures["training curves"] = "curves.png"
    return figures


def _both_classes(column: np.ndarray) -> bool:
    known = column[~np.isnan(column)]
    return bool(known.size) and 0 < known.sum() < known.size
