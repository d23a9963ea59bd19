"""fp16 variant for CUDA: weights and activations in float16, float32 at the graph's boundary.

onnxruntime.transformers' float16 converter with `keep_io_types=True` inserts Cast nodes after the
input and before each output, so the contract (float32 input, probabilities, heatmaps) is unchanged
and the service feeds the same tensors. onnxruntime also runs fp16 graphs on the CPU provider, which
is where the gate runs here; the speed-up is a GPU one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx

from export.errors import ExportError
from export.ood import ood_node_names
from export.variants import Gate, VariantReport, make_variant
from medcore.record import ModelRecord

# fp16 keeps ~3 decimal digits: probabilities move by ~1e-4 on a trained ConvNeXt; this bounds |p_fp16 - p_fp32|.
DEFAULT_FP16_TOLERANCE = 5e-3
DEFAULT_FP16_AGREEMENT = 0.99
# Like int8's: a variant is kept only if each label's validation AUROC moves by at most this much.
DEFAULT_FP16_MAX_DELTA_AUROC = 0.005


def convert_fp16(fp32_path: Path, record: ModelRecord) -> tuple[onnx.ModelProto, dict[str, Any]]:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(fp32_path))
    try:
        # The out-of-distribution nodes stay float32: a squared distance far from the training set overflows fp16.
        converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=ood_node_names(model))
    except Exception as exc:  # the converter raises many types
        raise ExportError(f"fp16 conversion of {fp32_path} failed: {exc}") from exc
    sort_topologically(converted.graph)
    how = "float16 weights and activations, float32 inputs/outputs (onnxruntime.transformers.float16)"
    return converted, {"method": how}


def make_fp16(
    fp32_path: str | Path,
    out_path: str | Path | None = None,
    *,
    parity_images: Sequence[str | Path] | None = None,
    tolerance: float = DEFAULT_FP16_TOLERANCE,
    min_agreement: float = DEFAULT_FP16_AGREEMENT,
    max_delta_auroc: float | None = DEFAULT_FP16_MAX_DELTA_AUROC,
    speed_seconds: float = 0.0,
    force: bool = False,
) -> VariantReport:
    """Write model.fp16.onnx beside the fp32 file (or at `out_path`) once it passes its gate and checks."""
    gate = Gate(tolerance=tolerance, min_agreement=min_agreement, max_delta_auroc=max_delta_auroc)
    return make_variant(
        fp32_path,
        "fp16",
        convert_fp16,
        gate,
        out_path=out_path,
        parity_images=parity_images,
        speed_seconds=speed_seconds,
        force=force,
    )


def sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder nodes so each follows its inputs' producers (the converter appends its input Casts last)."""
    ready = {value.name for value in graph.input} | {init.name for init in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        runnable = [node for node in pending if all(name in ready for name in node.input)]
        if not runnable:
            raise ExportError(f"the fp16 graph has a cycle or a missing input near node {pending[0].name!r}")
        for node in runnable:
            ready.update(node.output)
        ordered.extend(runnable)
        chosen = {id(node) for node in runnable}
        pending = [node for node in pending if id(node) not in chosen]
    graph.ClearField("node")
    graph.node.extend(ordered)
