"""python -m export.rebuild MODEL.onnx OUT.pt: a checkpoint from an fp32 file exported by `export_onnx`.

For a model whose checkpoint is gone (the bundled model's was never committed): the torchvision
network is rebuilt from the spec, its weights are read from the ONNX initializers (named after the
state dict; the dynamo exporter stores Linear weights transposed under generated names, in graph
order), and the rebuilt network must reproduce the file's probabilities on the record's validation
split within 1e-5 before the checkpoint is written. Re-exporting it then re-uses the same weights.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from export.errors import ExportError
from export.head import ProbabilityModel
from export.inputs import split_inputs
from export.metadata import read_record
from export.parity import open_session
from export.variants import predict
from trainer.checkpoint import Checkpoint, save_checkpoint
from trainer.models import ModelSpec, build_model

REBUILD_TOLERANCE = 1e-5


def checkpoint_from_onnx(path: Path, spec: ModelSpec) -> Checkpoint:
    """The checkpoint whose network reproduces the fp32 ONNX file at `path` (checked on validation)."""
    proto = onnx.load(str(path))
    record = read_record(path)
    arrays = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    nodes = proto.graph.node
    matmuls = [arrays[node.input[1]] for node in nodes if node.op_type == "MatMul" and node.input[1] in arrays]
    model = build_model(spec)
    state = model.state_dict()
    rebuilt: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        value = arrays.get(f"model.{name}")
        if value is None and name.endswith(".weight") and tensor.ndim == 2 and matmuls:
            value = matmuls.pop(0).T
        if value is None or tuple(value.shape) != tuple(tensor.shape):
            found = None if value is None else tuple(value.shape)
            raise ExportError(f"{path} has no weight for {name} {tuple(tensor.shape)} (found {found})")
        rebuilt[name] = torch.from_numpy(np.array(value, copy=True)).to(tensor.dtype)
    if matmuls:
        raise ExportError(f"{path} has {len(matmuls)} MatMul weights the {spec.arch} network does not use")
    model.load_state_dict(rebuilt)
    _check_reproduces(path, model.eval(), record)
    config = {"rebuilt_from": path.name, **record.provenance.config}
    return Checkpoint(spec=spec, record=record, model_state=model.state_dict(), epoch=-1, config=config)


def _check_reproduces(path: Path, model: torch.nn.Module, record: object) -> None:
    from medcore.record import ModelRecord

    assert isinstance(record, ModelRecord)
    inputs = split_inputs(record, "val", None)
    expected = predict(open_session(path), inputs.batch)
    with torch.inference_mode():
        got = ProbabilityModel(model, record.task)(torch.from_numpy(inputs.batch)).numpy()
    worst = float(np.max(np.abs(got - expected)))
    if not worst <= REBUILD_TOLERANCE:
        raise ExportError(f"the rebuilt network differs from {path} by up to {worst:.3g} on {inputs.source}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.rebuild", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="fp32 ONNX file written by `python -m export onnx`")
    parser.add_argument("output", type=Path, help="checkpoint to write")
    parser.add_argument("--arch", required=True)
    parser.add_argument("--stem-stride", type=int, default=4)
    parser.add_argument("--in-channels", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        record = read_record(args.model)
        spec = ModelSpec(args.arch, record.num_outputs, args.in_channels, args.stem_stride)
        checkpoint = checkpoint_from_onnx(args.model, spec)
    except (ExportError, OSError, ValueError) as exc:
        print(f"rebuild failed: {exc}", file=sys.stderr)
        return 1
    save_checkpoint(checkpoint, args.output)
    print(f"rebuilt {record.name} {record.version} ({args.arch}) from {args.model} -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
