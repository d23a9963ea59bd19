"""Score an exported ONNX file on dataset splits, through the trainer's loader and the trainer's metrics.

The inputs come from `trainer.data.ManifestDataset.model_input` (medcore preprocessing, as in
training evaluation and in the service) and the numbers from `trainer.metrics.binary_metrics`,
so ONNX and PyTorch results are comparable line by line ("for a fair comparison", as timm says).
A model with an `ood_score` output also gets, per split, the share of images its record's rule flags
(`OodSpec.flags`, the rule the service applies to the same output).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from export.contract import INPUT_NAME, OOD_NAME, OUTPUT_NAME, check_session_contract
from export.intervals import label_intervals
from export.metadata import session_record
from export.parity import open_session
from medcore.imaging import stack_batch
from medcore.record import ModelRecord, Task
from trainer.calibration import calibration_summary
from trainer.config import DataConfig, build_config
from trainer.data import DataError, LabeledData, ManifestDataset, load_data
from trainer.data.manifest import sha256_file
from trainer.metrics import binary_metrics

DEFAULT_BATCH_SIZE = 64
# Metrics compared with those the trainer measured in PyTorch and stored in the record.
COMPARED = ("auroc", "accuracy", "sensitivity", "specificity", "f1")


def data_config_from_record(
    record: ModelRecord, *, kind: str | None = None, path: str | Path | None = None, limit: int | None = None
) -> DataConfig:
    """The dataset the model was trained on (from its record's provenance), with overrides.

    The full data section of the training config is used when the record carries it, so layout
    options (uncertainty policy, channels, CSV columns, view filter...) are the ones trained with.
    """
    trained = record.provenance.config.get("data")
    if isinstance(trained, Mapping) and trained.get("kind") and trained.get("path"):
        config = build_config({"data": dict(trained)}).data
        changes: dict[str, Any] = {"limit": limit}
        if kind:
            changes["kind"] = kind
        if path:
            changes["path"] = str(path)
        elif not Path(config.path).exists() and record.provenance.data.get("path"):
            changes["path"] = str(record.provenance.data["path"])  # trained from another working directory
        return replace(config, **changes)
    recorded = record.provenance.data
    kind = kind or recorded.get("kind")
    path = path or recorded.get("path")
    if not kind or not path:
        raise DataError(
            f"the record of {record.name} {record.version} does not say which data it was trained on "
            f"(kind {kind!r}, path {path!r}); pass the data kind and path"
        )
    return DataConfig(kind=str(kind), path=str(path), labels=record.labels, limit=limit)


def evaluate_onnx(
    model_path: str | Path,
    *,
    data: DataConfig | None = None,
    splits: Sequence[str] = ("test",),
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, Any]:
    """Metrics of the ONNX file at `model_path` on `splits`, at the record's thresholds, as plain JSON types."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model_path = Path(model_path)
    session = open_session(model_path)
    record = session_record(session, model_path)
    check_session_contract(session, record)
    config = data or data_config_from_record(record)
    dataset = load_data(config)
    _check_labels(dataset, record)
    started = time.monotonic()
    results = {}
    for name in splits:
        split = dataset.split(name)
        prob, scores = predict_outputs(session, ManifestDataset(split, record.preprocessing), batch_size)
        results[name] = split_metrics(record, split.labels, prob, record.provenance.metrics.get(name))
        if scores is not None:
            results[name]["ood"] = ood_summary(record, scores)
    return {
        "model": {
            "file": model_path.name,
            "sha256": sha256_file(model_path),
            "name": record.name,
            "version": record.version,
            "variant": record.variant,
        },
        "runtime": {"onnxruntime": ort.__version__, "provider": "CPUExecutionProvider"},
        "data": {"kind": config.kind, "path": config.path, "limit": config.limit, **_data_match(dataset, record)},
        "task": record.task.value,
        "labels": list(record.labels),
        "thresholds": dict(record.thresholds),
        "seconds": round(time.monotonic() - started, 2),
        "splits": results,
    }


def read_record_any(path: str | Path) -> ModelRecord:
    """The record of an ONNX file through onnxruntime (works where the onnx package is not installed)."""
    return session_record(open_session(Path(path)), path)


def predict(session: ort.InferenceSession, dataset: ManifestDataset, batch_size: int) -> np.ndarray:
    """Probabilities [N, L] for every sample of `dataset`, in order."""
    return predict_outputs(session, dataset, batch_size)[0]


def predict_outputs(
    session: ort.InferenceSession, dataset: ManifestDataset, batch_size: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Probabilities [N, L] and, where the graph has it, `ood_score` [N] for every sample, in order."""
    names = [OUTPUT_NAME] + [OOD_NAME] * any(o.name == OOD_NAME for o in session.get_outputs())
    outputs: list[list[np.ndarray]] = [[] for _ in names]
    for start in range(0, len(dataset), batch_size):
        stop = min(start + batch_size, len(dataset))
        batch = stack_batch([dataset.model_input(i) for i in range(start, stop)])
        for part, value in zip(outputs, session.run(names, {INPUT_NAME: batch}), strict=True):
            part.append(value)
    prob = np.concatenate(outputs[0]).astype(np.float64)
    return prob, (np.concatenate(outputs[1]).astype(np.float64) if len(names) > 1 else None)


def ood_summary(record: ModelRecord, scores: np.ndarray) -> dict[str, Any]:
    """The share of images flagged out-of-distribution by the record's rule, and the score's quartiles."""
    assert record.ood is not None
    flagged = [record.ood.flags(float(score)) for score in scores]
    quartiles = np.quantile(scores, [0.25, 0.5, 0.75]).tolist() if len(scores) else [None] * 3
    return {
        "flagged": int(sum(flagged)),
        "flagged_fraction": float(np.mean(flagged)) if flagged else None,
        "threshold": record.ood.threshold,
        "score_quartiles": quartiles,
    }


def split_metrics(record: ModelRecord, labels: np.ndarray, prob: np.ndarray, reference: Any = None) -> dict[str, Any]:
    """Per label: `binary_metrics` at the record's threshold; top-1 accuracy for multiclass; deltas vs record."""
    per_label = {
        label: binary_metrics(labels[:, j], prob[:, j], record.thresholds[label])
        for j, label in enumerate(record.labels)
    }
    for j, label in enumerate(record.labels):
        per_label[label]["ci95"] = label_intervals(labels[:, j], prob[:, j], per_label[label])
    result: dict[str, Any] = {"n": len(labels), "labels": per_label}
    # ECE of the served probabilities (after any temperature folded into the file), as the trainer measures it.
    calibration = calibration_summary(labels, prob, record.task is Task.MULTICLASS)
    result["calibration"] = {"ece": calibration["ece"], "bins": calibration["bins"]}
    if record.task is Task.MULTICLASS:
        known = ~np.isnan(labels).any(axis=1)
        hits = np.argmax(prob[known], axis=1) == np.argmax(labels[known], axis=1)
        result["top1_accuracy"] = float(hits.mean()) if hits.size else None
    if len(record.labels) == 1 and isinstance(reference, dict):
        # The trainer stores one label's metrics per split; report ONNX minus PyTorch.
        ours = per_label[record.labels[0]]
        result["delta_vs_record"] = {
            key: ours[key] - reference[key]
            for key in COMPARED
            if isinstance(ours.get(key), float) and isinstance(reference.get(key), int | float)
        }
    return result


def _check_labels(dataset: LabeledData, record: ModelRecord) -> None:
    if tuple(dataset.label_names) != tuple(record.labels):
        raise DataError(f"the data has labels {list(dataset.label_names)}, the model {list(record.labels)}")
    if dataset.task is not record.task:
        raise DataError(f"the data is a {dataset.task.value} task, the model {record.task.value}")


def _data_match(dataset: LabeledData, record: ModelRecord) -> dict[str, Any]:
    """Whether the data files are byte-identical to the ones named in the record (None: not recorded)."""
    keys = ("files", "listing_sha256")
    recorded = {k: record.provenance.data[k] for k in keys if k in record.provenance.data}
    found = {k: dataset.description[k] for k in recorded if k in dataset.description}
    return {"same_as_training_data": (recorded == found) if recorded else None}
