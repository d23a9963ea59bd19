"""Where files go in a model directory: MODELS/<name>/<version>/<variant file> (the service's layout)."""

from __future__ import annotations

from pathlib import Path

from medcore.record import VARIANT_FILES, ModelRecord, Variant

CARD_FILE = "MODEL_CARD.md"
METRICS_FILE = "metrics.json"


def version_dir(models: str | Path, record: ModelRecord) -> Path:
    """MODELS/<name>/<version>: directory names equal the record's name and version."""
    for field, value in (("name", record.name), ("version", record.version)):
        if "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError(f"record {field} {value!r} cannot be a directory name")
    return Path(models) / record.name / record.version


def variant_path(fp32_path: str | Path, variant: Variant) -> Path:
    """The file of `variant` beside an fp32 file: model.onnx -> model.int8.onnx (any stem keeps its stem)."""
    fp32_path = Path(fp32_path)
    if variant == "fp32":
        return fp32_path
    if fp32_path.name == VARIANT_FILES["fp32"]:
        return fp32_path.with_name(VARIANT_FILES[variant])
    return fp32_path.with_name(f"{fp32_path.stem}.{variant}.onnx")
