"""int8 variant for the CPU: static QDQ quantisation, per-channel weights, calibrated on training images.

Activations are calibrated (min-max) on a fixed random subset of the training split the record names,
read through the trainer's data layer, so the scales come from the pixels the model was trained on.
Only the layers that hold the arithmetic are quantised: MatMul/Gemm (ConvNeXt's pointwise MLPs, the
head) and dense convolutions; depthwise convolutions, LayerNorm, GELU and the out-of-distribution
score's nodes stay float, where QDQ pairs
around them cost more than they save on this CPU. Dynamic quantisation is not used: it re-measures
activation ranges on every call and was about 3x slower than fp32 for ConvNeXt here.
Thresholds are re-chosen on validation with the trainer's own rule, since int8 shifts the scores.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from export.contract import INPUT_NAME
from export.errors import ExportError
from export.inputs import split_inputs
from export.ood import ood_node_names
from export.parity import CHUNK
from export.variants import Gate, VariantReport, make_variant
from medcore.record import ModelRecord

# Bound on |p_int8 - p_fp32| on the parity inputs; the decision and AUROC gates are the real test.
DEFAULT_INT8_TOLERANCE = 0.05
DEFAULT_INT8_AGREEMENT = 0.99
DEFAULT_MAX_DELTA_AUROC = 0.005
DEFAULT_CALIBRATION_SAMPLES = 256
CALIBRATION_SEED = 0
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")


def int8_builder(calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES):  # type: ignore[no-untyped-def]
    """The variant builder: quantise an fp32 file with calibration data from its record's training split."""

    def build(fp32_path: Path, record: ModelRecord) -> tuple[onnx.ModelProto, dict[str, Any]]:
        calibration = split_inputs(record, "train", calibration_samples, seed=CALIBRATION_SEED)
        model = quantize_static_qdq(fp32_path, calibration.batch)
        how = {
            "method": "static QDQ int8, per-channel weights, min-max calibration (onnxruntime.quantization)",
            "quantized_ops": list(QUANTIZED_OPS),
            "calibration": {
                "split": "train",
                "samples": len(calibration),
                "seed": CALIBRATION_SEED,
                "source": calibration.source,
            },
        }
        return model, how

    return build


def quantize_static_qdq(fp32_path: Path, calibration: np.ndarray) -> onnx.ModelProto:
    """The QDQ-quantised graph of `fp32_path`, activations calibrated on `calibration` (float32 NCHW)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration[i : i + CHUNK] for i in range(0, len(calibration), CHUNK))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    with tempfile.TemporaryDirectory(prefix="medimaging-quantize-") as tmp, _quiet_quantizer():
        prepared, target = Path(tmp) / "prepared.onnx", Path(tmp) / "model.int8.onnx"
        try:
            quant_pre_process(str(fp32_path), str(prepared))
            prepared_model = onnx.load(str(prepared))
            quantize_static(
                str(prepared),
                str(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(QUANTIZED_OPS),
                nodes_to_exclude=[*depthwise_convs(prepared_model), *ood_node_names(prepared_model)],
            )
        except Exception as exc:  # onnxruntime.quantization raises many types
            raise ExportError(f"static quantisation of {fp32_path} failed: {exc}") from exc
        return onnx.load(str(target))


def depthwise_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv nodes with group > 1 (ConvNeXt's 7x7 depthwise convolutions)."""
    names = []
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and group > 1:
            names.append(node.name)
    return names


def quantize_int8(
    fp32_path: str | Path,
    out_path: str | Path | None = None,
    *,
    parity_images: Sequence[str | Path] | None = None,
    tolerance: float = DEFAULT_INT8_TOLERANCE,
    min_agreement: float = DEFAULT_INT8_AGREEMENT,
    max_delta_auroc: float = DEFAULT_MAX_DELTA_AUROC,
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    speed_seconds: float = 0.0,
    force: bool = False,
) -> VariantReport:
    """Write model.int8.onnx beside the fp32 file (or at `out_path`) once it passes its gates and checks."""
    if calibration_samples < 1:
        raise ValueError(f"calibration_samples must be >= 1, got {calibration_samples}")
    gate = Gate(tolerance, min_agreement, max_delta_auroc, rechoose_thresholds=True)
    return make_variant(
        fp32_path,
        "int8",
        int8_builder(calibration_samples),
        gate,
        out_path=out_path,
        parity_images=parity_images,
        speed_seconds=speed_seconds,
        force=force,
    )


@contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """Drop the pre-processing hint and per-tensor chatter the quantizer logs on the root logger."""
    root = logging.getLogger()

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)
