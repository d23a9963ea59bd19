"""What `python -m trainer describe` prints: per split, samples, patients and label counts; missing files.

Run before a long training run. Nothing is decoded: the reader is asked to check only that files
exist, and to collect (not raise on) bad rows, so one report lists every problem training would hit.
"""

from __future__ import annotations

from typing import Any

from trainer.data.labels import label_counts, label_weights
from trainer.data.manifest import LabeledData

KEEP = ("kind", "path", "files", "official_split", "views", "uncertainty", "blank", "labeler", "excluded", "patients")


def describe_data(data: LabeledData, *, skip_bad: bool) -> dict[str, Any]:
    """A JSON-ready summary; `skip_bad` is the user's setting, to say whether training would stop."""
    report = data.description.get("skip_report", {"skipped": 0, "reasons": {}})
    result: dict[str, Any] = {key: data.description[key] for key in KEEP if key in data.description}
    result.update(
        {
            "task": data.task.value,
            "labels": list(data.label_names),
            "splits": {name: _split_summary(data, name) for name in data.splits},
            "label_weights": {
                name: None if w is None else round(w, 4)
                for name, w in label_weights(data.split("train").labels, data.label_names, data.task).items()
            },
            "leakage": data.description.get("leakage"),
            "problems": report,
            "training_would_stop": bool(report["skipped"]) and not skip_bad,
        }
    )
    return result


def _split_summary(data: LabeledData, name: str) -> dict[str, Any]:
    split = data.splits[name]
    return {
        "samples": len(split),
        "patients": None if split.patient_ids is None else len(set(split.patient_ids)),
        "labels": label_counts(split.labels, data.label_names, data.task),
    }


def without_identifiers(description: dict[str, Any]) -> dict[str, Any]:
    """The description with file names dropped from the skip and leakage reports (counts stay).

    File names can carry patient ids (NIH, MIMIC); the model record travels with the model
    and is served, so it keeps counts only. The full report stays beside the run's outputs.
    """
    result = dict(description)
    report = result.get("skip_report")
    if isinstance(report, dict):
        reasons = {reason: {"count": entry["count"]} for reason, entry in report.get("reasons", {}).items()}
        result["skip_report"] = {**report, "reasons": reasons}
    leakage = result.get("leakage")
    if isinstance(leakage, dict):
        result["leakage"] = {k: v for k, v in leakage.items() if k not in ("examples", "duplicate_examples")}
    return result
