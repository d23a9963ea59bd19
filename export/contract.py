"""The ONNX contract the service relies on: names, dtypes and shapes of the graph's edges.

input "input": float32 [batch, C, H, W], C/H/W from the record's preprocessing;
output "probabilities": float32 [batch, L], L = number of labels, activation applied in-graph.
"""

from __future__ import annotations

import onnx

from export.errors import ContractError
from medcore.record import ONNX_BATCH_AXIS as BATCH_AXIS
from medcore.record import ONNX_INPUT_NAME as INPUT_NAME
from medcore.record import ONNX_OUTPUT_NAME as OUTPUT_NAME
from medcore.record import ModelRecord


def expected_shapes(record: ModelRecord) -> dict[str, tuple[str | int, ...]]:
    recipe = record.preprocessing
    return {
        INPUT_NAME: (BATCH_AXIS, recipe.channels, recipe.height, recipe.width),
        OUTPUT_NAME: (BATCH_AXIS, record.num_outputs),
    }


def check_contract(model: onnx.ModelProto, record: ModelRecord) -> None:
    """Raise `ContractError` unless the graph has exactly the contract's input and output."""
    expected = expected_shapes(record)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    for role, values, name in (("input", inputs, INPUT_NAME), ("output", model.graph.output, OUTPUT_NAME)):
        names = [value.name for value in values]
        if names != [name]:
            raise ContractError(f"graph {role}s are {names}, the contract requires exactly [{name!r}]")
        tensor = values[0].type.tensor_type
        if tensor.elem_type != onnx.TensorProto.FLOAT:
            dtype = onnx.TensorProto.DataType.Name(tensor.elem_type)
            raise ContractError(f"graph {role} {name!r} is {dtype}, the contract requires FLOAT")
        shape = tuple(dim.dim_param or dim.dim_value for dim in tensor.shape.dim)
        if shape != expected[name]:
            raise ContractError(f"graph {role} {name!r} has shape {list(shape)}, expected {list(expected[name])}")
