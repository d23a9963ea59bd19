"""Checkpoint -> ONNX file that has passed the checker, the contract, and a parity run, or no file at all."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from export.atomic import write_checked
from export.contract import HEATMAP_NAME, OUTPUT_NAME, check_contract
from export.convert import DEFAULT_OPSET, Exporter, check_opset, to_onnx
from export.errors import ExportError
from export.head import ProbabilityModel, torch_reference, with_ood_reference
from export.heatmap import ExplainedModel
from export.inputs import parity_inputs
from export.layout import version_dir
from export.metadata import embed_metadata
from export.ood import DEFAULT_FIT_SAMPLES, DEFAULT_KEPT_FRACTION, add_ood_score
from export.parity import DEFAULT_TOLERANCE, ParityReport
from export.verify import check_destination, verify_file
from medcore.record import VARIANT_FILES, IntendedUse, ModelRecord
from trainer.checkpoint import Checkpoint, load_checkpoint, model_from_checkpoint

# Protobuf's message limit: larger models would need ONNX external data, which the service does not load.
PROTOBUF_LIMIT = 2**31


@dataclass(frozen=True)
class ExportReport:
    """What was written and how it was checked."""

    output: Path
    record: ModelRecord
    opset: int
    exporter: str
    file_size: int
    parity: ParityReport
    seconds: float
    heatmaps: bool = True
    parity_source: str = ""

    @property
    def ood(self) -> bool:
        return self.record.ood is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "name": self.record.name,
            "version": self.record.version,
            "task": self.record.task.value,
            "labels": list(self.record.labels),
            "opset": self.opset,
            "exporter": self.exporter,
            "file_size": self.file_size,
            "heatmaps": self.heatmaps,
            "ood": self.record.ood.model_dump(mode="json") if self.record.ood else None,
            "parity_inputs": self.parity_source,
            "parity": self.parity.to_dict(),
            "seconds": round(self.seconds, 2),
        }

    def summary(self) -> str:
        record, parity = self.record, self.parity
        labels = ", ".join(record.labels)
        outputs = "/heatmaps" * self.heatmaps + "/ood_score" * self.ood
        lines = [
            f"exported {record.name} {record.version} ({record.task.value}: {labels}) -> {self.output}",
            f"  opset {self.opset} ({self.exporter} exporter), {self.file_size / 1e6:.2f} MB, {self.seconds:.1f} s",
            f"  checks: onnx.checker (full), contract input/probabilities{outputs}, record round-trip: passed",
            f"  parity vs PyTorch on {self.parity_source}: {parity.line()}: passed",
        ]
        if record.ood is not None:
            spec = record.ood
            lines.append(
                f"  ood_score: Mahalanobis distance fitted on {spec.fit.get('of', spec.fitted_on)}; threshold "
                f"{spec.threshold:.4g} keeps {spec.kept_fraction:.0%} of {spec.threshold_split}"
            )
        return "\n".join(lines)


def export_onnx(
    checkpoint_path: str | Path,
    out_path: str | Path | None = None,
    *,
    model_dir: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    parity_images: Sequence[str | Path] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    name: str | None = None,
    version: str | None = None,
    exporter: Exporter = "dynamo",
    heatmaps: bool = True,
    ood: bool = False,
    ood_kept_fraction: float = DEFAULT_KEPT_FRACTION,
    ood_fit_samples: int = DEFAULT_FIT_SAMPLES,
    force: bool = False,
    intended_use: IntendedUse | Callable[[IntendedUse], IntendedUse | None] | None = None,
) -> ExportReport:
    """Export a training checkpoint to a self-describing ONNX file that outputs probabilities (and heatmaps).

    The file goes to `out_path`, or to MODEL_DIR/<name>/<version>/model.onnx. The graph is written to a
    temp file beside it, checked there (onnx.checker full check, the contract, the embedded record,
    parity with PyTorch within `tolerance` on `parity_images` or on validation samples read through
    the trainer's data layer), and only then renamed into place. `intended_use` replaces the checkpoint's
    (or maps it to the new one, None keeping it). With `ood`, the graph also outputs
    `ood_score`, fitted on the training split and thresholded on validation (`export.ood`), checked
    against the same computation on PyTorch's features. Raises `ExportError` (or
    `ParityError`) on any failed check, `FileExistsError` for an existing file without `force`.
    """
    started = time.monotonic()
    checkpoint_path = Path(checkpoint_path)
    _check_arguments(checkpoint_path, tolerance)
    check_opset(opset, exporter)
    checkpoint = _load(checkpoint_path)
    record = _override(checkpoint.record, name=name, version=version).model_copy(
        update={"variant": "fp32", "parity": {}}
    )
    use = intended_use(record.intended_use) if callable(intended_use) else intended_use
    if use is not None:
        record = record.model_copy(update={"intended_use": use})
    out_path = _destination(checkpoint_path, record, out_path, model_dir)
    check_destination(out_path, force=force)
    _check_spec(checkpoint, record)
    inputs = parity_inputs(record, parity_images)
    network = _network(checkpoint)
    model = ExplainedModel(network, record.task) if heatmaps else ProbabilityModel(network, record.task)
    outputs = (OUTPUT_NAME, HEATMAP_NAME) if heatmaps else (OUTPUT_NAME,)

    proto = to_onnx(model.eval(), record.preprocessing, opset=opset, exporter=exporter, outputs=outputs)
    reference = torch_reference(model)
    if ood:
        record, fit = add_ood_score(proto, record, kept_fraction=ood_kept_fraction, fit_samples=ood_fit_samples)
        reference = with_ood_reference(model, network, fit.score)
    info = _export_info(checkpoint_path, checkpoint, opset, exporter, tolerance)
    embed_metadata(proto, record, {**info, "parity_inputs": inputs.source})
    check_contract(proto, record)
    if proto.ByteSize() >= PROTOBUF_LIMIT:
        raise ExportError(f"the graph is {proto.ByteSize()} bytes; one-file ONNX is limited to {PROTOBUF_LIMIT}")
    data = proto.SerializeToString()

    def verify(path: Path) -> ParityReport:
        return verify_file(path, record, reference, inputs, tolerance=tolerance)

    parity = write_checked(out_path, data, verify)
    return ExportReport(
        output=out_path,
        record=record,
        opset=opset,
        exporter=exporter,
        file_size=out_path.stat().st_size,
        parity=parity,
        seconds=time.monotonic() - started,
        heatmaps=heatmaps,
        parity_source=inputs.source,
    )


def _destination(
    checkpoint_path: Path, record: ModelRecord, out_path: str | Path | None, model_dir: str | Path | None
) -> Path:
    if (out_path is None) == (model_dir is None):
        raise ValueError("give exactly one of an output file and a model directory")
    path = Path(out_path) if out_path is not None else version_dir(model_dir or ".", record) / VARIANT_FILES["fp32"]
    if path.exists() and path.resolve() == checkpoint_path.resolve():
        raise ValueError(f"output path {path} is the checkpoint itself")
    return path


def _load(checkpoint_path: Path) -> Checkpoint:
    """The checkpoint, or one line saying why it cannot be exported."""
    try:
        return load_checkpoint(checkpoint_path)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch.load, the record and the spec raise many types; one line each
        raise ExportError(f"{checkpoint_path} is not a usable checkpoint: {_first_line(exc)}") from exc


def _network(checkpoint: Checkpoint) -> nn.Module:
    try:
        return model_from_checkpoint(checkpoint)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ExportError(
            f"the checkpoint's weights do not fit a {checkpoint.spec.arch} network: {_first_line(exc)}"
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_arguments(checkpoint_path: Path, tolerance: float) -> None:
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint_path} does not exist")


def _override(record: ModelRecord, *, name: str | None, version: str | None) -> ModelRecord:
    """The record with a new name and/or version, validated again."""
    changes = {key: value for key, value in (("name", name), ("version", version)) if value is not None}
    return ModelRecord.from_dict({**record.to_dict(), **changes}) if changes else record


def _check_spec(checkpoint: Checkpoint, record: ModelRecord) -> None:
    spec, recipe = checkpoint.spec, record.preprocessing
    trained = record.provenance.architecture.split()[0] if record.provenance.architecture else ""
    if trained and trained != spec.arch:
        raise ExportError(f"the checkpoint's network is {spec.arch}, its record says it was trained as {trained}")
    if spec.num_outputs != record.num_outputs:
        raise ExportError(f"the network has {spec.num_outputs} outputs, the record names {record.num_outputs} labels")
    if spec.in_channels != recipe.channels:
        raise ExportError(
            f"the network takes {spec.in_channels} channels, the record's preprocessing gives {recipe.channels}"
        )


def _export_info(
    checkpoint_path: Path, checkpoint: Checkpoint, opset: int, exporter: str, tolerance: float
) -> dict[str, Any]:
    digest = hashlib.sha256()
    with checkpoint_path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {
        "checkpoint": checkpoint_path.name,
        "checkpoint_sha256": digest.hexdigest(),
        "epoch": checkpoint.epoch,
        "arch": checkpoint.spec.arch,
        "opset": opset,
        "exporter": exporter,
        "parity_tolerance": tolerance,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
    }
