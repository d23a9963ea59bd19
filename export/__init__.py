"""Export a training checkpoint to a self-describing, self-checked ONNX file."""

from export.contract import BATCH_AXIS, INPUT_NAME, OUTPUT_NAME
from export.errors import ContractError, ExportError, ParityError
from export.metadata import read_record
from export.onnx_export import ExportReport, export_onnx
from export.parity import DEFAULT_TOLERANCE, ParityReport

__all__ = [
    "BATCH_AXIS",
    "DEFAULT_TOLERANCE",
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
