"""Export real (tiny, seeded) torchvision networks and check the files with onnx and onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from export_support import KERMANY, make_checkpoint, shared_export
from onnx import numpy_helper

from export import (
    DEFAULT_TOLERANCE,
    INPUT_NAME,
    OUTPUT_NAME,
    ExportReport,
    ParityError,
    export_onnx,
    read_record,
)
from export.head import ProbabilityModel
from export.inputs import load_inputs
from export.quantize import quantize_int8
from export.variants import Gate, GateError, make_variant
from medcore.record import ONNX_METADATA_KEY, Task
from trainer.checkpoint import Checkpoint, model_from_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def binary() -> tuple[Checkpoint, ExportReport]:
    return shared_export()


def test_file_passes_the_full_checker_and_names_itself(binary: tuple[Checkpoint, ExportReport]) -> None:
    checkpoint, report = binary
    onnx.checker.check_model(str(report.output), full_check=True)
    model = onnx.load(str(report.output))
    assert report.opset == 18
    assert any(entry.domain in ("", "ai.onnx") and entry.version == 18 for entry in model.opset_import)
    assert model.producer_name == "medimaging-platform export"
    assert model.producer_version
    for text in (checkpoint.record.name, checkpoint.record.version, "pneumonia"):
        assert text in model.doc_string
    assert report.file_size == report.output.stat().st_size


def test_record_round_trips_through_the_onnx_metadata(binary: tuple[Checkpoint, ExportReport]) -> None:
    checkpoint, report = binary
    assert read_record(report.output) == checkpoint.record
    props = {prop.key: prop.value for prop in onnx.load(str(report.output)).metadata_props}
    assert props[ONNX_METADATA_KEY] == checkpoint.record.to_json()


def test_graph_follows_the_contract(binary: tuple[Checkpoint, ExportReport]) -> None:
    _, report = binary
    session = ort.InferenceSession(str(report.output), providers=["CPUExecutionProvider"])
    [graph_input], [graph_output, heatmaps] = session.get_inputs(), session.get_outputs()
    assert (graph_input.name, graph_input.type) == (INPUT_NAME, "tensor(float)")
    assert graph_input.shape == ["batch", 1, 28, 28]
    assert (graph_output.name, graph_output.type) == (OUTPUT_NAME, "tensor(float)")
    assert graph_output.shape == ["batch", 1]
    assert (heatmaps.name, heatmaps.type, heatmaps.shape) == ("heatmaps", "tensor(float)", ["batch", 1, 1, 1])


def test_dynamic_batch_runs_one_and_five_real_images(binary: tuple[Checkpoint, ExportReport]) -> None:
    checkpoint, report = binary
    paths = sorted(KERMANY.glob("*.jpeg"))[:5]
    batch = load_inputs(paths, checkpoint.record.preprocessing)
    session = ort.InferenceSession(str(report.output), providers=["CPUExecutionProvider"])
    five = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
    one = session.run([OUTPUT_NAME], {INPUT_NAME: batch[:1]})[0]
    assert five.shape == (5, 1) and one.shape == (1, 1)
    assert five.dtype == np.float32 and np.all((five >= 0) & (five <= 1))
    np.testing.assert_allclose(one[0], five[0], atol=1e-6)
    torch_model = ProbabilityModel(model_from_checkpoint(checkpoint), checkpoint.record.task)
    with torch.inference_mode():
        expected = torch_model(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(five, expected, rtol=0, atol=DEFAULT_TOLERANCE)
    assert np.ptp(five) > 1e-3, "the seeded network should not be constant on real images"


def test_parity_defaults_to_validation_samples_of_the_models_own_data(
    binary: tuple[Checkpoint, ExportReport],
) -> None:
    _, report = binary
    parity = report.parity
    assert parity.tolerance == DEFAULT_TOLERANCE == 1e-4
    assert report.parity_source == "medmnist val split (8 of 524)"
    assert parity.images[0] == "val[0]" and len(parity.images) == 8
    assert parity.batch_sizes == (1, 8)
    assert 0 <= parity.max_abs_diff <= parity.tolerance
    assert parity.heatmap_diff is not None and parity.heatmap_diff <= 1e-3


def test_multiclass_gets_softmax_and_name_version_overrides(tmp_path: Path) -> None:
    labels = ("normal", "bacterial", "viral")
    checkpoint = make_checkpoint(tmp_path / "model.pt", task=Task.MULTICLASS, labels=labels, seed=1)
    images = sorted(KERMANY.glob("*.jpeg"))[:6]
    report = export_onnx(
        tmp_path / "model.pt", tmp_path / "model.onnx", name="pneumonia-3class", version="2.0", parity_images=images
    )
    record = read_record(report.output)
    assert (record.name, record.version) == ("pneumonia-3class", "2.0")
    assert record.model_copy(update={"name": "test-pneumonia", "version": "0.0.1"}) == checkpoint.record
    assert report.parity.images == tuple(path.name for path in images)
    batch = load_inputs(images, record.preprocessing)
    session = ort.InferenceSession(str(report.output), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {INPUT_NAME: batch})[0]
    assert probabilities.shape == (6, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert report.parity.max_abs_diff <= DEFAULT_TOLERANCE


def test_resnet50_exports(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "resnet.pt", arch="resnet50", size=32)
    report = export_onnx(tmp_path / "resnet.pt", tmp_path / "resnet.onnx")
    assert read_record(report.output) == checkpoint.record
    assert report.parity.max_abs_diff <= DEFAULT_TOLERANCE
    session = ort.InferenceSession(str(report.output), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 1, 32, 32]


@pytest.mark.filterwarnings("ignore:.*legacy TorchScript-based ONNX export:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_legacy_exporter_writes_opset_17(tmp_path: Path) -> None:
    make_checkpoint(tmp_path / "model.pt")
    report = export_onnx(tmp_path / "model.pt", tmp_path / "model.onnx", opset=17, exporter="legacy")
    model = onnx.load(str(report.output))
    assert [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")] == [17]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert report.parity.max_abs_diff <= DEFAULT_TOLERANCE


def test_variant_gate_refuses_a_variant_whose_decisions_move(
    binary: tuple[Checkpoint, ExportReport], tmp_path: Path
) -> None:
    """A 'variant' whose head is negated (p -> 1 - p) flips the validation decisions: refused, nothing written."""
    _, report = binary

    def negated_head(path: Path, record: object) -> tuple[onnx.ModelProto, dict[str, object]]:
        proto = onnx.load(str(path))
        for init in proto.graph.initializer:
            if init.name.startswith("model.classifier.2."):
                init.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(init), init.name))
        return proto, {"method": "negated head (test)"}

    out = tmp_path / "model.int8.onnx"
    with pytest.raises(GateError, match=r"int8 decisions agree with fp32 on .* the gate is 99%"):
        make_variant(report.output, "int8", negated_head, Gate(tolerance=1.0), out_path=out)
    assert list(tmp_path.iterdir()) == []


def test_int8_beyond_parity_tolerance_writes_nothing(binary: tuple[Checkpoint, ExportReport], tmp_path: Path) -> None:
    _, report = binary
    out = tmp_path / "strict.int8.onnx"
    with pytest.raises((ParityError, GateError)):
        quantize_int8(report.output, out, tolerance=0.0, min_agreement=0.0, max_delta_auroc=1.0, calibration_samples=32)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_not_replaced_without_force(binary: tuple[Checkpoint, ExportReport]) -> None:
    _, report = binary
    with pytest.raises(FileExistsError, match="already exists; export under another --version, or pass --force"):
        export_onnx(report.output.with_name("model.pt"), report.output)


def test_a_model_the_repository_ships_is_never_replaced(binary: tuple[Checkpoint, ExportReport]) -> None:
    from export.verify import git_tracks
    from service.config import BUNDLED_MODEL

    _, report = binary
    assert git_tracks(BUNDLED_MODEL) and not git_tracks(report.output)
    before = BUNDLED_MODEL.read_bytes()
    with pytest.raises(FileExistsError, match=r"git tracks it.*--name or --version"):
        export_onnx(report.output.with_name("model.pt"), BUNDLED_MODEL, force=True)
    assert BUNDLED_MODEL.read_bytes() == before
