"""Dynamic int8 variant of an exported file (onnxruntime quantize_dynamic), checked against the fp32 file."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from export.atomic import write_checked
from export.errors import ExportError
from export.metadata import EXPORT_METADATA_KEY, embed_metadata, read_metadata, read_record
from export.onnx_export import verify_file
from export.parity import CHUNK, ParityReport, Reference, load_inputs, onnx_reference, resolve_images
from medcore.record import ModelRecord

# int8 weights move probabilities by ~1e-2 on a trained ConvNeXt; this bound is on |p_int8 - p_fp32|.
DEFAULT_INT8_TOLERANCE = 0.05


@dataclass(frozen=True)
class QuantizeReport:
    output: Path
    file_size: int
    fp32_size: int
    parity: ParityReport
    decision_agreement: float  # share of (image, label) decisions at the record's thresholds that agree

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "file_size": self.file_size,
            "fp32_size": self.fp32_size,
            "parity_vs_fp32": self.parity.to_dict(),
            "decision_agreement": self.decision_agreement,
        }

    def summary(self) -> str:
        parity = self.parity
        return "\n".join([
            f"quantized (dynamic int8) -> {self.output}, {self.file_size / 1e6:.2f} MB "
            f"({self.file_size / self.fp32_size:.0%} of fp32)",
            f"  parity vs fp32 onnx: {len(parity.images)} images, max abs diff {parity.max_abs_diff:.2e} "
            f"on probabilities (tolerance {parity.tolerance:g}): passed; "
            f"decisions agree on {self.decision_agreement:.1%}",
        ])


def int8_path(fp32_path: Path) -> Path:
    """model.onnx -> model.int8.onnx"""
    return fp32_path.with_name(f"{fp32_path.stem}.int8.onnx")


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path | None = None,
    *,
    parity_images: Sequence[str | Path] | None = None,
    tolerance: float = DEFAULT_INT8_TOLERANCE,
) -> QuantizeReport:
    """Write a dynamically int8-quantised copy of an exported file, with the same record and contract.

    Checked like the fp32 export (checker, contract, record) plus parity against the fp32 file
    in onnxruntime within `tolerance`; nothing is written if a check fails.
    """
    fp32_path = Path(fp32_path)
    out_path = Path(out_path) if out_path is not None else int8_path(fp32_path)
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    record = read_record(fp32_path)
    images = resolve_images(parity_images)
    inputs = load_inputs(images, record.preprocessing)
    model = _quantized(fp32_path, record)
    reference = onnx_reference(fp32_path)

    def verify(path: Path) -> ParityReport:
        names = [image.name for image in images]
        return verify_file(path, record, reference, inputs, tolerance=tolerance, names=names, against="fp32 ONNX")

    parity = write_checked(out_path, model.SerializeToString(), verify)
    int8 = onnx_reference(out_path)
    agreement = _decision_agreement(record, _chunked(reference, inputs), _chunked(int8, inputs))
    return QuantizeReport(out_path, out_path.stat().st_size, fp32_path.stat().st_size, parity, agreement)


def _quantized(fp32_path: Path, record: ModelRecord) -> onnx.ModelProto:
    export_info = json.loads(read_metadata(fp32_path).get(EXPORT_METADATA_KEY, "{}"))
    export_info["quantization"] = "dynamic int8 weights (onnxruntime.quantization.quantize_dynamic, QInt8)"
    with tempfile.TemporaryDirectory(prefix="medimaging-quantize-") as tmp, _quiet_root_warnings():
        target = Path(tmp) / "model.int8.onnx"
        try:
            quantize_dynamic(fp32_path, target, weight_type=QuantType.QInt8)
        except Exception as exc:  # onnxruntime.quantization raises many types
            raise ExportError(f"quantize_dynamic failed on {fp32_path}: {exc}") from exc
        model = onnx.load(str(target))
    embed_metadata(model, record, export_info)
    return model


@contextmanager
def _quiet_root_warnings() -> Iterator[None]:
    """Drop the "consider pre-processing" hint quantize_dynamic logs on the root logger at every call."""
    root = logging.getLogger()

    def not_the_hint(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider to run pre-processing")

    root.addFilter(not_the_hint)
    try:
        yield
    finally:
        root.removeFilter(not_the_hint)


def _chunked(run: Reference, inputs: np.ndarray) -> np.ndarray:
    return np.concatenate([run(inputs[i : i + CHUNK]) for i in range(0, len(inputs), CHUNK)])


def _decision_agreement(record: ModelRecord, fp32: np.ndarray, int8: np.ndarray) -> float:
    thresholds = np.asarray([record.thresholds[label] for label in record.labels])
    return float(np.mean((fp32 >= thresholds) == (int8 >= thresholds)))
