"""A failed export raises, leaves no output file, and never touches an existing one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from export_support import COVID, KERMANY, make_checkpoint, make_record, shared_export
from onnx import numpy_helper

import export.onnx_export as onnx_export
from export import ContractError, ExportError, ParityError, export_onnx
from export.contract import check_contract
from export.inputs import resolve_images

PREVIOUS = b"a previously exported, good model"


@pytest.fixture(scope="module")
def checkpoint_path() -> Path:
    return shared_export()[1].output.with_name("model.pt")


@pytest.fixture(scope="module")
def corrupted() -> onnx.ModelProto:
    """A real export whose classifier weights were changed afterwards, so PyTorch and ONNX disagree."""
    proto = onnx.load(str(shared_export()[1].output))
    [weight] = [init for init in proto.graph.initializer if init.name.endswith("classifier.2.weight")]
    # Noise, not a constant: the head's LayerNorm makes features sum to ~0, hiding a uniform shift.
    noise = np.random.default_rng(0).normal(0.0, 0.5, size=tuple(weight.dims)).astype(np.float32)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + noise, weight.name))
    return proto


@pytest.fixture
def export_corrupted(monkeypatch: pytest.MonkeyPatch, corrupted: onnx.ModelProto) -> None:
    def fake_to_onnx(*args: object, **kwargs: object) -> onnx.ModelProto:
        copy = onnx.ModelProto()
        copy.CopyFrom(corrupted)
        return copy

    monkeypatch.setattr(onnx_export, "to_onnx", fake_to_onnx)


@pytest.mark.slow
@pytest.mark.usefixtures("export_corrupted")
def test_parity_failure_leaves_no_file(checkpoint_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    with pytest.raises(ParityError, match=r"differ by up to .* tolerance is 0\.0001"):
        export_onnx(checkpoint_path, out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.usefixtures("export_corrupted")
def test_parity_failure_keeps_the_existing_file(checkpoint_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    out.write_bytes(PREVIOUS)
    with pytest.raises(ParityError):
        export_onnx(checkpoint_path, out, parity_images=[KERMANY / "IM-0001-0001.jpeg"], force=True)
    assert out.read_bytes() == PREVIOUS
    assert list(tmp_path.iterdir()) == [out]


def test_contract_rejects_a_renamed_output(corrupted: onnx.ModelProto) -> None:
    proto = onnx.ModelProto()
    proto.CopyFrom(corrupted)
    proto.graph.output[0].name = "logits"
    with pytest.raises(ContractError, match="'probabilities'"):
        check_contract(proto, make_record())
    with pytest.raises(ContractError, match=r"shape \['batch', 1\], expected \['batch', 3\]"):
        check_contract(corrupted, make_record(task=make_record().task.MULTICLASS, labels=("a", "b", "c")))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tolerance": -1.0}, "tolerance must be a finite number >= 0, got -1.0"),
        ({"opset": 17}, r"opset 17 is out of range for the dynamo exporter: 18\.\..*--exporter legacy"),
        ({"exporter": "tflite"}, "Invalid exporter 'tflite'"),
        ({"parity_images": ["/no/such/image.png"]}, "parity image /no/such/image.png does not exist"),
        ({"parity_images": ["/no/such/*.png"]}, "matches no files"),
    ],
)
def test_bad_arguments_fail_before_writing(
    checkpoint_path: Path, tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        export_onnx(checkpoint_path, tmp_path / "model.onnx", **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_missing_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*missing\.pt does not exist"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "model.onnx")


def test_record_that_disagrees_with_the_network_is_refused(tmp_path: Path) -> None:
    from trainer.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "model.pt"
    checkpoint = make_checkpoint(path)
    checkpoint.record = make_record(task=checkpoint.record.task.MULTICLASS, labels=("a", "b"))
    save_checkpoint(checkpoint, path)
    assert load_checkpoint(path).record.labels == ("a", "b")
    with pytest.raises(ExportError, match="the network has 1 outputs, the record names 2 labels"):
        export_onnx(path, tmp_path / "model.onnx")
    assert not (tmp_path / "model.onnx").exists()


def test_parity_images_resolve_files_dirs_and_globs() -> None:
    one = KERMANY / "IM-0001-0001.jpeg"
    from_dir = resolve_images([COVID])
    assert from_dir and all(p.parent == COVID for p in from_dir)
    assert {p.suffix.lower() for p in from_dir} <= {".png", ".jpg", ".jpeg"}
    pattern = resolve_images([str(KERMANY / "IM-000*.jpeg"), one])
    assert pattern[0] == one and pattern.count(one) == 1
    assert all(p.name.startswith("IM-000") for p in pattern)
