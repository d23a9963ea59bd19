"""Export a training checkpoint to a self-describing, self-checked ONNX file, and derive its variants.

Torch is imported only by the checkpoint -> ONNX step (`export_onnx`), loaded on first use, so that
`python -m export evaluate|inspect|card` start without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from export.contract import BATCH_AXIS, HEATMAP_NAME, INPUT_NAME, OUTPUT_NAME
from export.errors import ContractError, ExportError, ParityError
from export.metadata import read_record
from export.parity import DEFAULT_TOLERANCE, ParityReport

if TYPE_CHECKING:
    from export.onnx_export import ExportReport, export_onnx

__all__ = [
    "BATCH_AXIS",
    "DEFAULT_TOLERANCE",
    "HEATMAP_NAME",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ContractError",
    "ExportError",
    "ExportReport",
    "ParityError",
    "ParityReport",
    "export_onnx",
    "read_record",
]


def __getattr__(name: str) -> Any:
    if name in ("ExportReport", "export_onnx"):
        from export import onnx_export

        return getattr(onnx_export, name)
    raise AttributeError(f"module 'export' has no attribute {name!r}")
