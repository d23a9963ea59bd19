"""report.md: the metrics of metrics.json as tables (with confidence intervals), tied to the figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

BINARY_ROWS = (("auroc", "AUROC"), ("average_precision", "average precision"), ("accuracy", "accuracy"),
               ("balanced_accuracy", "balanced accuracy"), ("sensitivity", "sensitivity (recall)"),
               ("specificity", "specificity"), ("precision", "precision (PPV)"), ("f1", "F1"),
               ("fbeta", "F-beta"))  # fmt: skip
MULTILABEL_ROWS = (("macro_auroc", "macro AUROC"), ("macro_average_precision", "macro average precision"),
                   ("macro_f1", "macro F1"), ("macro_fbeta", "macro F-beta"),
                   ("label_accuracy", "label accuracy (mean over labels)"),
                   ("subset_accuracy", "subset accuracy (all labels right)"))  # fmt: skip
MULTICLASS_ROWS = (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"), ("macro_f1", "macro F1"),
                   ("macro_auroc", "macro AUROC (one-vs-rest)"))  # fmt: skip
POLICY_NAMES = {"youden": "Youden's J", "balanced": "equal error (sens = spec)", "fbeta": "max F-beta",
                "sensitivity": "target sensitivity", "fixed": "fixed"}  # fmt: skip


def number(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{float(value):.{digits}f}"


def interval(bounds: Sequence[float] | None) -> str:
    return "n/a" if bounds is None else f"{bounds[0]:.3f} - {bounds[1]:.3f}"


def render_report(metrics: Mapping[str, Any], figures: Mapping[str, str]) -> str:
    """The whole report.md text."""
    task = metrics.get("task", "binary")
    lines = ["# Training report", ""]
    lines += _run_summary(metrics)
    lines += _metric_table(metrics, task)
    if "threshold_policies" in metrics:
        lines += _policy_table(metrics["threshold_policies"], task)
    lines += _calibration(metrics)
    if figures:
        lines += ["## Figures", ""]
        lines += [f"### {name}\n\n![{name}]({path})\n" for name, path in figures.items()]
    return "\n".join(lines).rstrip() + "\n"


def _run_summary(metrics: Mapping[str, Any]) -> list[str]:
    facts = [("task", metrics.get("task")), ("device", metrics.get("device")),
             ("epochs", metrics.get("epochs")), ("wall time (s)", metrics.get("wall_seconds"))]  # fmt: skip
    if metrics.get("best_epoch") is not None:
        facts.append(("best epoch (by validation score, from 1)", int(metrics["best_epoch"])))  # already 1-based
    if metrics.get("threshold_policy"):
        facts.append(("threshold policy (chosen on validation)", metrics["threshold_policy"]))
    if "threshold" in metrics:
        facts.append(("threshold", number(metrics["threshold"], 4)))
    return [*(f"- {name}: {value}" for name, value in facts if value is not None), ""]


def _metric_table(metrics: Mapping[str, Any], task: str) -> list[str]:
    rows = {"binary": BINARY_ROWS, "multilabel": MULTILABEL_ROWS}.get(task, MULTICLASS_ROWS)
    key = next((k for k in metrics if k.endswith("_intervals")), None)
    ci: Mapping[str, Any] = metrics[key] if key else {"intervals": {}, "level": 0.95}
    split = str(ci.get("split", "test"))
    level = f"{ci.get('level', 0.95):.0%}"
    lines = ["## Metrics", "", f"| metric | val | {split} | {split} {level} CI |", "|---|---|---|---|"]
    for name, title in rows:
        val = metrics.get("val", {}).get(name)
        test = metrics.get(split, {}).get(name)
        lines.append(f"| {title} | {number(val)} | {number(test)} | {interval(ci['intervals'].get(name))} |")
    lines.append("")
    if key:
        lines.append(f"Intervals: {ci['method']}, {ci['resamples']} resamples (seed {ci['seed']}), at the thresholds "
                     "chosen on validation.")  # fmt: skip
    beta = metrics.get(split, {}).get("beta")
    if beta is not None:
        lines.append(f"F-beta uses beta = {beta:g} (recall weighs {beta:g} times precision).")
    return [*lines, ""]


def _policy_table(policies: Mapping[str, Any], task: str) -> list[str]:
    settings = policies.get("settings", {})
    lines = [
        "## Threshold policies",
        "",
        "Each policy picks its threshold on validation; the test columns show what it gives on the test split. "
        "Validation prevalence can differ from deployment's, so compare the operating points, not only the "
        f"optimum (target sensitivity {settings.get('target_sensitivity')}, beta {settings.get('beta')}).",
        "",
    ]
    if task == "binary":
        lines += ["| policy | threshold | test sensitivity | test specificity | test PPV | test F1 | test F-beta "
                  "| test accuracy |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for policy, entry in policies.items():
            if policy == "settings":
                continue
            t = entry["test"]
            cells = [number(next(iter(entry["thresholds"].values())), 4)] + [
                number(t[k]) for k in ("sensitivity", "specificity", "precision", "f1", "fbeta", "accuracy")
            ]
            lines.append(f"| {POLICY_NAMES.get(policy, policy)} | " + " | ".join(cells) + " |")
    else:
        lines += ["| policy | test macro F1 | test macro F-beta | test label accuracy | test subset accuracy |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for policy, entry in policies.items():
            if policy == "settings":
                continue
            t = entry["test"]
            cells = [number(t[k]) for k in ("macro_f1", "macro_fbeta", "label_accuracy", "subset_accuracy")]
            lines.append(f"| {POLICY_NAMES.get(policy, policy)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _calibration(metrics: Mapping[str, Any]) -> list[str]:
    calibration = metrics.get("calibration", {})
    lines = ["## Calibration", ""]
    for split in ("val", "test"):
        if split in calibration:
            entry = calibration[split]
            lines.append(f"- {split} ECE ({entry['bins']} equal-width bins): {number(entry['ece'])}")
    temperature = calibration.get("temperature")
    if temperature is not None:
        lines.append(f"- temperature fitted on val: {temperature:.3f} (folded into the model's last layer; the "
                     "figures above are after scaling)")  # fmt: skip
        before = calibration.get("before_temperature", {})
        for split, value in before.items():
            lines.append(f"- {split} ECE before temperature scaling: {number(value)}")
    return [*lines, ""]
