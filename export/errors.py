"""Errors raised by export; each one means nothing was written to the output path."""


class ExportError(RuntimeError):
    """The exported graph failed one of its checks."""


class ContractError(ExportError):
    """The graph's inputs or outputs differ from the ONNX contract the service relies on."""


class ParityError(ExportError):
    """onnxruntime's probabilities differ from PyTorch's by more than the tolerance."""
