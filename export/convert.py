"""Trace a PyTorch model into an in-memory ONNX graph that follows the contract."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import onnx
import torch
from torch import nn

from export.contract import BATCH_AXIS, INPUT_NAME, OUTPUT_NAME
from export.errors import ExportError
from medcore.record import Preprocessing

Exporter = Literal["dynamo", "legacy"]
EXPORTERS: tuple[Exporter, ...] = ("dynamo", "legacy")
MIN_OPSET = 17
# The torch.export-based exporter writes opset 18 and above; asked for 17 it silently keeps 18.
MIN_DYNAMO_OPSET = 18
DEFAULT_OPSET = 18
# Traced with two samples so that no exporter can specialise the batch axis to 1.
EXAMPLE_BATCH = 2


def check_opset(opset: int, exporter: Exporter) -> None:
    """Raise `ValueError` naming the bound when `opset` cannot be written by `exporter`."""
    if exporter not in EXPORTERS:
        raise ValueError(f"Invalid exporter {exporter!r}. Only {', '.join(EXPORTERS)} are supported.")
    highest = onnx.defs.onnx_opset_version()
    lowest = MIN_DYNAMO_OPSET if exporter == "dynamo" else MIN_OPSET
    if not lowest <= opset <= highest:
        hint = f" (use --exporter legacy for opset {MIN_OPSET})" if exporter == "dynamo" and opset == MIN_OPSET else ""
        raise ValueError(f"opset {opset} is out of range for the {exporter} exporter: {lowest}..{highest}{hint}")


def to_onnx(
    model: nn.Module,
    recipe: Preprocessing,
    *,
    opset: int,
    exporter: Exporter,
    outputs: Sequence[str] = (OUTPUT_NAME,),
) -> onnx.ModelProto:
    """Export `model` (eval mode, already wrapped to output probabilities [, heatmaps]) with a dynamic batch axis."""
    check_opset(opset, exporter)
    model = model.eval()
    example = torch.zeros(EXAMPLE_BATCH, recipe.channels, recipe.height, recipe.width)
    names = list(outputs)
    try:
        run = _dynamo if exporter == "dynamo" else _legacy
        proto = run(model, example, opset, names)
    except Exception as exc:  # the exporters raise many unrelated types; keep the cause attached
        raise ExportError(f"torch.onnx.export ({exporter}, opset {opset}) failed: {exc}") from exc
    found = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None)
    if found != opset:
        raise ExportError(f"the {exporter} exporter wrote opset {found}, {opset} was requested")
    return proto


def _dynamo(model: nn.Module, example: torch.Tensor, opset: int, outputs: list[str]) -> onnx.ModelProto:
    program = torch.onnx.export(
        model,
        (example,),
        None,
        input_names=[INPUT_NAME],
        output_names=outputs,
        opset_version=opset,
        dynamo=True,
        dynamic_shapes=({0: torch.export.Dim(BATCH_AXIS)},),
        optimize=True,
        verbose=False,
    )
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    return program.model_proto


def _legacy(model: nn.Module, example: torch.Tensor, opset: int, outputs: list[str]) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory(prefix="medimaging-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        _legacy_to_file(model, example, opset, path, outputs)
        return onnx.load(str(path))


def _legacy_to_file(model: nn.Module, example: torch.Tensor, opset: int, path: Path, outputs: list[str]) -> None:
    torch.onnx.export(
        model,
        (example,),
        path,
        input_names=[INPUT_NAME],
        output_names=outputs,
        opset_version=opset,
        dynamo=False,
        dynamic_axes={name: {0: BATCH_AXIS} for name in (INPUT_NAME, *outputs)},
        do_constant_folding=True,
    )
