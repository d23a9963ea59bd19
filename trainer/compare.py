"""`python -m trainer compare`: train several architectures with one recipe on one dataset, side by side.

The pneumonia study (ConvNeXt vs ResNet50 on Kermany) reported accuracy, precision, recall and F1;
the table here has those on the test split at the validation-chosen threshold, plus AUROC, each
with its bootstrap 95% interval, and both confusion matrices in one figure. Each run is an ordinary
training run in `<output_dir>/<arch>/` (its own report.md); the comparison goes to compare.md,
compare.json and confusion_matrices.png in `<output_dir>`.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medcore.atomic import atomic_write
from trainer.config import ARCHITECTURES, TrainConfig
from trainer.plots import plot_confusions_side_by_side
from trainer.report_md import interval, number

logger = logging.getLogger("trainer")

DEFAULT_ARCHS = ("convnext_tiny", "resnet50")
# metrics.json key -> column title; binary tasks (the study's), then multi-class.
BINARY_COLUMNS = (("accuracy", "accuracy"), ("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
                  ("auroc", "AUROC"))  # fmt: skip
MULTICLASS_COLUMNS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
                      ("macro_f1", "macro F1"), ("macro_auroc", "macro AUROC"))  # fmt: skip
# The study's own test figures on Kermany (accuracy, precision, recall, F1), for reference only.
STUDY = {"ResNet50 (study)": (0.88, 0.82, 0.99, 0.90), "ConvNeXt (study)": (0.88, 0.86, 0.92, 0.89)}

Trainer = Callable[[TrainConfig], dict[str, Any]]


def run_configs(config: TrainConfig, archs: Sequence[str]) -> dict[str, TrainConfig]:
    """One config per architecture: `config` with only model.arch, name and output_dir changed."""
    if len(archs) < 2:
        raise ValueError(f"compare needs at least two architectures, got {list(archs)}")
    unknown = [a for a in archs if a not in ARCHITECTURES]
    if unknown:
        raise ValueError(f"Invalid architecture {unknown[0]!r}. Only {', '.join(ARCHITECTURES)} are supported.")
    if len(set(archs)) != len(archs):
        raise ValueError(f"compare got an architecture twice: {list(archs)}")
    configs = {}
    for arch in archs:
        run = copy.deepcopy(config)
        run.model.arch = arch
        run.name = f"{config.model_name.rsplit('-', 1)[0]}-{arch}" if config.name is None else f"{config.name}-{arch}"
        run.output_dir = str(Path(config.output_dir) / arch)
        configs[arch] = run
    return configs


def compare(config: TrainConfig, archs: Sequence[str] = DEFAULT_ARCHS, trainer: Trainer | None = None) -> dict:
    """Train each architecture (sequentially, same data, split, recipe and seed) and write the comparison."""
    if trainer is None:
        from trainer.train import train  # torch only when training

        trainer = train
    configs = run_configs(config, archs)
    results = {}
    for arch, run in configs.items():
        logger.info("compare: training %s into %s", arch, run.output_dir)
        results[arch] = trainer(run)
    return write_comparison(Path(config.output_dir), results, config)


def write_comparison(output_dir: Path, results: Mapping[str, Mapping[str, Any]], config: TrainConfig) -> dict:
    """compare.json, compare.md and confusion_matrices.png from each run's metrics."""
    output_dir.mkdir(parents=True, exist_ok=True)
    task = next(iter(results.values())).get("task", "binary")
    columns = BINARY_COLUMNS if task == "binary" else MULTICLASS_COLUMNS
    rows = {arch: _row(metrics, columns) for arch, metrics in results.items()}
    summary = {
        "task": task,
        "data": {"kind": config.data.kind, "path": Path(config.data.path).name, "limit": config.data.limit},
        "recipe": {
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "optimizer": config.optim.optimizer,
            "lr": config.optim.lr,
            "schedule": config.optim.schedule,
            "threshold_policy": config.threshold.policy,
        },
        "models": rows,
    }
    text = json.dumps(summary, indent=2) + "\n"
    atomic_write(output_dir / "compare.json", lambda handle: handle.write(text.encode()))
    matrices = {arch: metrics["test"]["confusion_matrix"] for arch, metrics in results.items()}
    labels = _class_names(next(iter(results.values())))
    plot_confusions_side_by_side(matrices, labels, output_dir / "confusion_matrices.png")
    markdown = render_comparison(summary, columns)
    atomic_write(output_dir / "compare.md", lambda handle: handle.write(markdown.encode()))
    return summary


def _row(metrics: Mapping[str, Any], columns: Sequence[tuple[str, str]]) -> dict[str, Any]:
    test = metrics["test"]
    intervals = metrics.get("test_intervals", {}).get("intervals", {})
    aliases = {"recall": "sensitivity"}  # the intervals name recall by its clinical name
    row: dict[str, Any] = {
        key: {"value": test.get(key), "ci": intervals.get(key, intervals.get(aliases.get(key, key)))}
        for key, _ in columns
    }
    row["n"] = test.get("n")
    row["threshold"] = test.get("threshold")
    row["wall_seconds"] = metrics.get("wall_seconds")
    row["resamples"] = metrics.get("test_intervals", {}).get("resamples")
    return row


def _class_names(metrics: Mapping[str, Any]) -> list[str]:
    if "label" in metrics:
        return [f"not {metrics['label']}", str(metrics["label"])]
    return [str(name) for name in metrics.get("labels", [])]


def render_comparison(summary: Mapping[str, Any], columns: Sequence[tuple[str, str]]) -> str:
    """The comparison table (test split, value and 95% CI per cell), the study's figures and the figure."""
    recipe = summary["recipe"]
    data = summary["data"]
    lines = [
        "# Architecture comparison",
        "",
        f"Data: {data['kind']} `{data['path']}`"
        + (f" (limit {data['limit']} per split)" if data["limit"] else "")
        + f". One recipe for all: {recipe['epochs']} epochs, batch {recipe['batch_size']}, {recipe['optimizer']} "
        f"lr {recipe['lr']:g}, {recipe['schedule']} schedule, threshold policy {recipe['threshold_policy']} "
        "(chosen on validation). Test split; cells are value (95% bootstrap CI).",
        "",
        "| model | " + " | ".join(title for _, title in columns) + " | test n | wall time (s) |",
        "|---|" + "---|" * (len(columns) + 2),
    ]
    for arch, row in summary["models"].items():
        cells = [f"{number(row[key]['value'])} ({interval(row[key]['ci'])})" for key, _ in columns]
        lines.append(f"| {arch} | " + " | ".join(cells) + f" | {row['n']} | {row['wall_seconds']} |")
    if summary["task"] == "binary":
        for name, figures in STUDY.items():
            lines.append(f"| {name} | " + " | ".join(f"{v:.2f}" for v in figures) + " | n/a | 624 | n/a |")
        lines += ["", "The study's rows are its published figures on the full Kermany set, for reference; "
                  "they were not reproduced here unless the recipe above is the study's."]  # fmt: skip
    lines += ["", "![confusion matrices](confusion_matrices.png)", ""]
    return "\n".join(lines)
