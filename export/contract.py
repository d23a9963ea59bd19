"""The ONNX contract the service relies on: names, dtypes and shapes of the graph's edges.

input "input": float32 [batch, C, H, W], C/H/W from the record's preprocessing;
output "probabilities": float32 [batch, L], L = number of labels, activation applied in-graph;
optional second output "heatmaps": float32 [batch, L, h, w], whose spatial mean is each label's logit;
optional last output "ood_score": float32 [batch], present exactly when the record has an `ood` spec.
Every variant (fp32, fp16, int8) keeps float32 at this boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from export.errors import ContractError
from medcore.record import ONNX_BATCH_AXIS as BATCH_AXIS
from medcore.record import ONNX_HEATMAP_OUTPUT_NAME as HEATMAP_NAME
from medcore.record import ONNX_INPUT_NAME as INPUT_NAME
from medcore.record import ONNX_OOD_OUTPUT_NAME as OOD_NAME
from medcore.record import ONNX_OUTPUT_NAME as OUTPUT_NAME
from medcore.record import ModelRecord

if TYPE_CHECKING:
    import onnx
    import onnxruntime as ort

# One graph edge as the contract sees it: (name, element type, shape with symbolic dims as names).
Edge = tuple[str, str, tuple[str | int | None, ...]]
FLOAT = "float"


def expected_shapes(record: ModelRecord) -> dict[str, tuple[str | int, ...]]:
    recipe = record.preprocessing
    return {
        INPUT_NAME: (BATCH_AXIS, recipe.channels, recipe.height, recipe.width),
        OUTPUT_NAME: (BATCH_AXIS, record.num_outputs),
        OOD_NAME: (BATCH_AXIS,),
    }


def check_contract(model: onnx.ModelProto, record: ModelRecord) -> None:
    """Raise `ContractError` unless the graph has exactly the contract's input and outputs."""
    import onnx

    def edge(value: onnx.ValueInfoProto) -> Edge:
        tensor = value.type.tensor_type
        dtype = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
        return value.name, dtype, tuple(dim.dim_param or dim.dim_value for dim in tensor.shape.dim)

    initializers = {init.name for init in model.graph.initializer}
    inputs = [edge(value) for value in model.graph.input if value.name not in initializers]
    check_edges(inputs, [edge(value) for value in model.graph.output], record)


def check_session_contract(session: ort.InferenceSession, record: ModelRecord) -> None:
    """The same check on a loaded onnxruntime session (no onnx package needed)."""

    def edge(arg: ort.NodeArg) -> Edge:
        dtype = str(arg.type).removeprefix("tensor(").removesuffix(")")
        return arg.name, dtype, tuple(arg.shape)

    check_edges([edge(arg) for arg in session.get_inputs()], [edge(arg) for arg in session.get_outputs()], record)


def has_heatmaps(output_names: Sequence[str]) -> bool:
    return HEATMAP_NAME in output_names


def check_edges(inputs: Sequence[Edge], outputs: Sequence[Edge], record: ModelRecord) -> None:
    expected = expected_shapes(record)
    input_names, output_names = [e[0] for e in inputs], [e[0] for e in outputs]
    if input_names != [INPUT_NAME]:
        raise ContractError(f"graph inputs are {input_names}, the contract requires exactly [{INPUT_NAME!r}]")
    allowed = [[OUTPUT_NAME, *maps] for maps in ([], [HEATMAP_NAME])]
    allowed += [[*names, OOD_NAME] for names in allowed]
    if output_names not in allowed:
        raise ContractError(
            f"graph outputs are {output_names}, the contract requires [{OUTPUT_NAME!r}], optionally followed by "
            f"{HEATMAP_NAME!r} and then {OOD_NAME!r}"
        )
    if (OOD_NAME in output_names) != (record.ood is not None):
        raise ContractError(
            f"the graph {'has' if OOD_NAME in output_names else 'lacks'} an {OOD_NAME!r} output but the record "
            f"{'has no' if record.ood is None else 'has an'} 'ood' spec; they go together"
        )
    for role, (name, dtype, shape) in [("input", inputs[0]), *(("output", edge) for edge in outputs)]:
        if dtype != FLOAT:
            raise ContractError(f"graph {role} {name!r} is {dtype.upper()}, the contract requires FLOAT")
        if name == HEATMAP_NAME:
            _check_heatmap_shape(shape, record)
        elif shape != expected[name]:
            raise ContractError(f"graph {role} {name!r} has shape {list(shape)}, expected {list(expected[name])}")


def _check_heatmap_shape(shape: tuple[str | int | None, ...], record: ModelRecord) -> None:
    fixed = len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:])
    if not fixed or tuple(shape[:2]) != (BATCH_AXIS, record.num_outputs):
        raise ContractError(
            f"graph output {HEATMAP_NAME!r} has shape {list(shape)}, expected [{BATCH_AXIS!r}, "
            f"{record.num_outputs}, h, w] with fixed h and w"
        )
