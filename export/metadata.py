"""The model record inside an ONNX file: written at export, read back by anyone with the onnx package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medcore.record import ONNX_METADATA_KEY, ModelRecord, RecordError

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

PRODUCER_NAME = "medimaging-platform export"
# Export settings (opset, exporter, source checkpoint, software); informative, not part of the record.
EXPORT_METADATA_KEY = "medimaging.export"


def describe(record: ModelRecord) -> str:
    """One human line for the graph's doc_string."""
    return (
        f"{record.name} {record.version}: {record.task.value} classifier; "
        f"outputs probabilities for labels [{', '.join(record.labels)}]"
    )


def embed_metadata(model: onnx.ModelProto, record: ModelRecord, export_info: dict[str, Any]) -> None:
    """Write the full record JSON, the export settings, producer and doc_string into `model`."""
    import onnx

    props = {prop.key: prop.value for prop in model.metadata_props}
    props[ONNX_METADATA_KEY] = record.to_json()
    props[EXPORT_METADATA_KEY] = json.dumps(export_info, sort_keys=True)
    onnx.helper.set_model_props(model, props)
    model.producer_name = PRODUCER_NAME
    model.producer_version = _package_version()
    model.doc_string = describe(record)


def read_metadata(path: str | Path) -> dict[str, str]:
    """All metadata_props of an ONNX file, without loading external weight data."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


def read_record(path: str | Path) -> ModelRecord:
    """The `ModelRecord` embedded in the ONNX file at `path`; `RecordError` if absent or malformed."""
    text = read_metadata(path).get(ONNX_METADATA_KEY)
    if text is None:
        raise RecordError(f"{path} has no model record (metadata key {ONNX_METADATA_KEY!r})")
    return ModelRecord.from_json(text)


def session_record(session: ort.InferenceSession, path: str | Path) -> ModelRecord:
    """The record of a loaded onnxruntime session (no onnx package needed, as in the serving venv)."""
    text = session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
    if text is None:
        raise RecordError(f"{path} has no model record (metadata key {ONNX_METADATA_KEY!r})")
    return ModelRecord.from_json(text)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medimaging-platform")
    except PackageNotFoundError:
        return "unknown"
