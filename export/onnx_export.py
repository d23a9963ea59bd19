"""Checkpoint -> ONNX file that has passed the checker, the contract, and a parity run, or no file at all."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from export.atomic import write_checked
from export.contract import check_contract
from export.convert import DEFAULT_OPSET, Exporter, check_opset, to_onnx
from export.errors import ExportError
from export.head import ProbabilityModel
from export.metadata import embed_metadata, read_record
from export.parity import (
    DEFAULT_TOLERANCE,
    ParityReport,
    Reference,
    check_parity,
    load_inputs,
    resolve_images,
    torch_reference,
)
from medcore.record import ModelRecord
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
            "parity": self.parity.to_dict(),
            "seconds": round(self.seconds, 2),
        }

    def summary(self) -> str:
        record, parity = self.record, self.parity
        labels = ", ".join(record.labels)
        return "\n".join([
            f"exported {record.name} {record.version} ({record.task.value}: {labels}) -> {self.output}",
            f"  opset {self.opset} ({self.exporter} exporter), {self.file_size / 1e6:.2f} MB, {self.seconds:.1f} s",
            "  checks: onnx.checker (full), contract input/probabilities, record round-trip: passed",
            f"  parity: {len(parity.images)} images, onnxruntime batch sizes {sorted(set(parity.batch_sizes))}, "
            f"max abs diff {parity.max_abs_diff:.2e} on probabilities (tolerance {parity.tolerance:g}): passed",
        ])


def export_onnx(
    checkpoint_path: str | Path,
    out_path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    parity_images: Sequence[str | Path] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    name: str | None = None,
    version: str | None = None,
    exporter: Exporter = "dynamo",
) -> ExportReport:
    """Export a training checkpoint to `out_path`, a self-describing ONNX file that outputs probabilities.

    The graph is written to a temp file beside `out_path`, checked there (onnx.checker full check,
    the contract, the embedded record, parity with PyTorch on `parity_images` within `tolerance`),
    and only then renamed into place. Raises `ExportError` (or `ParityError`) on any failed check.
    """
    started = time.monotonic()
    checkpoint_path, out_path = Path(checkpoint_path), Path(out_path)
    _check_arguments(checkpoint_path, out_path, tolerance)
    check_opset(opset, exporter)
    images = resolve_images(parity_images)
    checkpoint = load_checkpoint(checkpoint_path)
    record = _override(checkpoint.record, name=name, version=version)
    _check_spec(checkpoint, record)
    inputs = load_inputs(images, record.preprocessing)
    model = ProbabilityModel(model_from_checkpoint(checkpoint), record.task).eval()

    proto = to_onnx(model, record.preprocessing, opset=opset, exporter=exporter)
    embed_metadata(proto, record, _export_info(checkpoint_path, checkpoint, opset, exporter, tolerance))
    check_contract(proto, record)
    if proto.ByteSize() >= PROTOBUF_LIMIT:
        raise ExportError(f"the graph is {proto.ByteSize()} bytes; one-file ONNX is limited to {PROTOBUF_LIMIT}")
    data = proto.SerializeToString()

    def verify(path: Path) -> ParityReport:
        names = [image.name for image in images]
        return verify_file(path, record, torch_reference(model), inputs, tolerance=tolerance, names=names)

    parity = write_checked(out_path, data, verify)
    return ExportReport(
        output=out_path,
        record=record,
        opset=opset,
        exporter=exporter,
        file_size=out_path.stat().st_size,
        parity=parity,
        seconds=time.monotonic() - started,
    )


def verify_file(
    path: Path,
    record: ModelRecord,
    reference: Reference,
    inputs: np.ndarray,
    *,
    tolerance: float,
    names: Sequence[str],
    against: str = "PyTorch",
) -> ParityReport:
    """All checks of a written ONNX file: full checker, contract, embedded record, parity with `reference`."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected the exported graph: {exc}") from exc
    check_contract(onnx.load(str(path), load_external_data=False), record)
    if read_record(path) != record:
        raise ExportError("the record read back from the ONNX metadata differs from the one written")
    return check_parity(reference, path, inputs, tolerance=tolerance, names=names, against=against)


def _check_arguments(checkpoint_path: Path, out_path: Path, tolerance: float) -> None:
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint_path} does not exist")
    if out_path.exists() and out_path.resolve() == checkpoint_path.resolve():
        raise ValueError(f"output path {out_path} is the checkpoint itself")
    if out_path.is_dir():
        raise IsADirectoryError(f"output path {out_path} is a directory; give a file name such as model.onnx")


def _override(record: ModelRecord, *, name: str | None, version: str | None) -> ModelRecord:
    """The record with a new name and/or version, validated again."""
    changes = {key: value for key, value in (("name", name), ("version", version)) if value is not None}
    return ModelRecord.from_dict({**record.to_dict(), **changes}) if changes else record


def _check_spec(checkpoint: Checkpoint, record: ModelRecord) -> None:
    spec, recipe = checkpoint.spec, record.preprocessing
    if spec.num_outputs != record.num_outputs:
        raise ExportError(
            f"the network has {spec.num_outputs} outputs, the record names {record.num_outputs} labels"
        )
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
