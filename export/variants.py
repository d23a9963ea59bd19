"""A numeric variant (fp16, int8) of an fp32 file that proves itself before it is written.

Every variant keeps the fp32 file's contract (float32 in and out, same outputs) and record, except
`variant`, `parity` (its figures against fp32) and, where asked, thresholds re-chosen on validation.
The gate runs the whole validation split through both files: decisions must agree on at least
`min_agreement` of (image, label) pairs and, where set, each label's AUROC may move by at most
`max_delta_auroc`. A model with an out-of-distribution output gets its threshold re-set on the variant's
own validation scores (same kept fraction), so the variant flags as often as fp32 did. Then the written
file passes the fp32 file's checks (checker, contract, record) and a parity run on the parity inputs,
within the variant's own tolerance.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from export.atomic import write_checked
from export.contract import INPUT_NAME
from export.errors import ExportError
from export.inputs import ParityInputs, parity_inputs, split_inputs
from export.layout import variant_path
from export.metadata import EXPORT_METADATA_KEY, embed_metadata, read_metadata, read_record
from export.parity import CHUNK, ParityReport, onnx_reference, open_session
from export.verify import check_destination, verify_file
from medcore.record import ModelRecord, OodSpec, Task, Variant

# fp32 file + its record -> the variant graph, in memory, and a line saying how it was made.
Builder = Callable[[Path, ModelRecord], tuple[onnx.ModelProto, dict[str, Any]]]
SPEED_BATCHES = (1, 8)


class GateError(ExportError):
    """The variant's decisions or AUROC on validation moved further from fp32 than its gate allows."""


@dataclass(frozen=True)
class Gate:
    tolerance: float  # max |p_variant - p_fp32| on the parity inputs
    min_agreement: float = 0.99
    max_delta_auroc: float | None = None
    rechoose_thresholds: bool = False


@dataclass(frozen=True)
class VariantReport:
    variant: Variant
    output: Path
    file_size: int
    fp32_size: int
    record: ModelRecord
    parity: ParityReport
    figures: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "output": str(self.output),
            "file_size": self.file_size,
            "fp32_size": self.fp32_size,
            "thresholds": dict(self.record.thresholds),
            "parity_vs_fp32": self.parity.to_dict(),
            **self.figures,
        }

    def summary(self) -> str:
        f = self.figures
        lines = [
            f"{self.variant} variant -> {self.output}, {self.file_size / 1e6:.2f} MB "
            f"({self.file_size / self.fp32_size:.0%} of fp32)",
            f"  parity vs fp32 on the parity inputs: {self.parity.line()}: passed",
            f"  gate on {f['gate']['split']} ({f['gate']['n']} images): decisions agree on "
            f"{f['decision_agreement']:.2%} (>= {f['gate']['min_agreement']:.0%}), max abs diff "
            f"{f['max_abs_diff']:.2e}; passed",
        ]
        for split, values in f.get("auroc", {}).items():
            cells = ", ".join(
                f"{label} fp32 {v['fp32']:.4f} {self.variant} {v['variant']:.4f} (d {v['delta']:+.4f})"
                for label, v in values.items()
                if v["fp32"] is not None
            )
            lines.append(f"  AUROC {split}: {cells}")
        if f.get("ood_threshold"):
            t = f["ood_threshold"]
            lines.append(f"  ood_score threshold re-set on {t['split']}: fp32 {t['fp32']:.4g} -> {t['variant']:.4g}")
        if f.get("thresholds_fp32") and f["thresholds_fp32"] != dict(self.record.thresholds):
            lines.append(f"  thresholds re-chosen on val: {f['thresholds_fp32']} -> {dict(self.record.thresholds)}")
        speed = f.get("speed")
        if speed:
            cells = ", ".join(
                f"batch {b}: fp32 {v['fp32']:.0f} img/s, {self.variant} {v['variant']:.0f} img/s "
                f"({v['variant'] / v['fp32']:.2f}x)"
                for b, v in speed["img_per_s"].items()
            )
            lines.append(f"  speed ({speed['threads']} CPU threads, {speed['note']}): {cells}")
        return "\n".join(lines)


def make_variant(
    fp32_path: str | Path,
    variant: Variant,
    build: Builder,
    gate: Gate,
    *,
    out_path: str | Path | None = None,
    parity_images: Sequence[str | Path] | None = None,
    speed_seconds: float = 0.0,
    force: bool = False,
) -> VariantReport:
    """Build, gate, check and atomically write `variant` of the fp32 file; nothing is written on failure."""
    fp32_path = Path(fp32_path)
    out = Path(out_path) if out_path is not None else variant_path(fp32_path, variant)
    if not np.isfinite(gate.tolerance) or gate.tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {gate.tolerance}")
    check_destination(out, force=force)
    record = read_record(fp32_path)
    if record.variant != "fp32":
        raise ExportError(f"{fp32_path} is the {record.variant} variant; variants are made from the fp32 file")
    inputs = parity_inputs(record, parity_images)
    proto, how = build(fp32_path, record)
    data = proto.SerializeToString()
    figures, thresholds = gate_on_validation(record, fp32_path, data, gate, variant)
    if speed_seconds > 0:
        figures["speed"] = measure_speed(fp32_path, data, inputs, speed_seconds)
    parity = {k: figures[k] for k in ("decision_agreement", "max_abs_diff", "gate", "auroc", "speed") if k in figures}
    changes: dict[str, Any] = {"variant": variant, "thresholds": thresholds}
    if record.ood is not None:
        changes["ood"] = refit_ood_threshold(record, data, figures)
    variant_record = record.model_copy(update={**changes, "parity": {"reference": "fp32", **how, **parity}})
    export_info = json.loads(read_metadata(fp32_path).get(EXPORT_METADATA_KEY, "{}"))
    embed_metadata(proto, variant_record, {**export_info, "variant": variant, **how})
    reference = onnx_reference(fp32_path)

    def verify(path: Path) -> ParityReport:
        return verify_file(
            path,
            variant_record,
            reference,
            inputs,
            tolerance=gate.tolerance,
            against="fp32 ONNX",
            heatmap_tolerance=None,
            ood_tolerance=None,
        )

    report = write_checked(out, proto.SerializeToString(), verify)
    return VariantReport(variant, out, out.stat().st_size, fp32_path.stat().st_size, variant_record, report, figures)


def gate_on_validation(
    record: ModelRecord, fp32_path: Path, variant_bytes: bytes, gate: Gate, variant: str
) -> tuple[dict[str, Any], dict[str, float]]:
    """Figures of the variant against fp32 on val (gated) and test (reported); the variant's thresholds."""
    from trainer.metrics import binary_metrics

    fp32_session, variant_session = open_session(fp32_path), open_session(variant_bytes)
    figures: dict[str, Any] = {"auroc": {}}
    thresholds = dict(record.thresholds)
    for split in ("val", "test"):
        try:
            inputs, labels = _split_with_labels(record, split)
        except (ValueError, KeyError):
            if split == "val":
                raise
            continue  # a dataset without a test split still gets its gate
        p32, pv = predict(fp32_session, inputs), predict(variant_session, inputs)
        if split == "val":
            if gate.rechoose_thresholds:
                thresholds = _rechoose(record, labels, pv)
            agreement = decision_agreement(record.task, p32, record.thresholds, pv, thresholds)
            figures.update(
                decision_agreement=agreement,
                max_abs_diff=float(np.max(np.abs(pv - p32))),
                gate={
                    "split": "val",
                    "n": len(inputs),
                    "min_agreement": gate.min_agreement,
                    "max_delta_auroc": gate.max_delta_auroc,
                },
                thresholds_fp32=dict(record.thresholds),
            )
        figures["auroc"][split] = {}
        for j, label in enumerate(record.labels):
            a32 = binary_metrics(labels[:, j], p32[:, j], 0.5)["auroc"]
            av = binary_metrics(labels[:, j], pv[:, j], 0.5)["auroc"]
            delta = None if a32 is None or av is None else av - a32
            figures["auroc"][split][label] = {"fp32": a32, "variant": av, "delta": delta}
    _check_gate(figures, gate, variant)
    return figures, thresholds


def refit_ood_threshold(record: ModelRecord, variant_bytes: bytes, figures: dict[str, Any]) -> OodSpec:
    """The record's `ood` spec with the threshold re-set on the variant's own scores of its threshold split."""
    from export.ood import run_scores, threshold_for

    spec = record.ood
    assert spec is not None
    scores = run_scores(variant_bytes, split_inputs(record, spec.threshold_split, None).batch)
    threshold = threshold_for(scores, spec.kept_fraction)
    figures["ood_threshold"] = {"fp32": spec.threshold, "variant": threshold, "split": spec.threshold_split}
    return spec.model_copy(update={"threshold": threshold})


def _check_gate(figures: dict[str, Any], gate: Gate, variant: str) -> None:
    agreement = figures["decision_agreement"]
    if not agreement >= gate.min_agreement:
        raise GateError(
            f"{variant} decisions agree with fp32 on {agreement:.2%} of validation (image, label) pairs; "
            f"the gate is {gate.min_agreement:.0%}"
        )
    if gate.max_delta_auroc is None:
        return
    for label, values in figures["auroc"]["val"].items():
        delta = values["delta"]
        if delta is not None and not abs(delta) <= gate.max_delta_auroc:
            raise GateError(
                f"{variant} validation AUROC of {label!r} is {values['variant']:.4f}, fp32 {values['fp32']:.4f}: "
                f"|delta| {abs(delta):.4f} exceeds the gate {gate.max_delta_auroc:g}"
            )


def _split_with_labels(record: ModelRecord, split: str) -> tuple[np.ndarray, np.ndarray]:
    inputs = split_inputs(record, split, None)
    assert inputs.labels is not None
    return inputs.batch, inputs.labels


def _rechoose(record: ModelRecord, labels: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """The trainer's threshold rule (policy from the training config) applied to the variant's val outputs."""
    from trainer.thresholds import choose_thresholds

    policy = record.provenance.config.get("threshold")
    if not isinstance(policy, dict) or "policy" not in policy:
        return dict(record.thresholds)  # no recorded rule to reuse: keep fp32's thresholds
    return choose_thresholds(
        record.task is Task.MULTICLASS,
        labels,
        prob,
        record.labels,
        str(policy["policy"]),
        float(policy.get("value", 0.5)),
    )


def decision_agreement(
    task: Task, fp32: np.ndarray, fp32_thresholds: dict[str, float], other: np.ndarray, thresholds: dict[str, float]
) -> float:
    """Share of decisions that agree: argmax per image for multiclass, (image, label) pairs otherwise."""
    if task is Task.MULTICLASS:
        return float(np.mean(np.argmax(fp32, axis=1) == np.argmax(other, axis=1)))
    t32 = np.asarray(list(fp32_thresholds.values()))
    tv = np.asarray(list(thresholds.values()))
    return float(np.mean((fp32 >= t32) == (other >= tv)))


def predict(session: ort.InferenceSession, inputs: np.ndarray) -> np.ndarray:
    """Probabilities [N, L] (the first output) in chunks of CHUNK, as float64."""
    parts = [session.run(None, {INPUT_NAME: inputs[i : i + CHUNK]})[0] for i in range(0, len(inputs), CHUNK)]
    return np.concatenate(parts).astype(np.float64)


def measure_speed(fp32_path: Path, variant_bytes: bytes, inputs: ParityInputs, seconds: float) -> dict[str, Any]:
    """img/s of both files on this CPU at SPEED_BATCHES, alternating runs so that load changes hit both."""
    import os

    threads = min(os.cpu_count() or 1, 8)
    sessions = {"fp32": open_session(fp32_path, threads), "variant": open_session(variant_bytes, threads)}
    result: dict[str, dict[str, float]] = {}
    for batch_size in SPEED_BATCHES:
        batch = np.resize(inputs.batch, (batch_size, *inputs.batch.shape[1:]))
        counts = dict.fromkeys(sessions, 0.0)
        spent = dict.fromkeys(sessions, 0.0)
        for session in sessions.values():
            session.run(None, {INPUT_NAME: batch})  # warm-up
        while min(spent.values()) < seconds / len(SPEED_BATCHES) / 2:
            for name, session in sessions.items():
                started = time.perf_counter()
                session.run(None, {INPUT_NAME: batch})
                spent[name] += time.perf_counter() - started
                counts[name] += batch_size
        result[str(batch_size)] = {name: counts[name] / spent[name] for name in sessions}
    return {"threads": threads, "img_per_s": result, "note": "onnxruntime CPU provider, measured on the export machine"}
