"""The out-of-distribution score in the graph: a tiny real ConvNeXt exported with `--ood` on PneumoniaMNIST."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import sklearn
import torch
from export_support import PNEUMONIAMNIST, REPO, make_trained_checkpoint, shared_export
from onnx import numpy_helper
from PIL import Image
from sklearn.covariance import LedoitWolf

from export import ExportReport, export_onnx, read_record
from export.contract import check_contract
from export.errors import ContractError, ExportError
from export.evaluation import evaluate_onnx
from export.fp16 import make_fp16
from export.inputs import split_inputs
from export.ood import FIT_SEED
from export.ood_file import add_ood_to_file
from export.parity import open_session
from export.quantize import quantize_int8
from medcore.imaging import load_model_input, stack_batch
from medcore.record import ONNX_OOD_OUTPUT_NAME, ModelRecord
from trainer.checkpoint import Checkpoint, model_from_checkpoint

pytestmark = pytest.mark.slow
FIT_SAMPLES = 600
# float32 graph against a float64 reference on the same features: the distances agree to ~1e-6 relative.
REFERENCE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Checkpoint, ExportReport]]:
    folder = tmp_path_factory.mktemp("ood")
    checkpoint = make_trained_checkpoint(folder / "model.pt")
    report = export_onnx(folder / "model.pt", folder / "model.onnx", ood=True, ood_fit_samples=FIT_SAMPLES)
    yield checkpoint, report


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def far_images() -> dict[str, bytes]:
    """Images nothing like a chest film: a random RGB texture and the two photographs scikit-learn ships.

    (A rendered text page is not among them: at 28 px it is a flat grey square, whose features this briefly
    trained network puts near the training mean; the trained bundled model flags such pages, bench/ood_sets.py.)
    """
    rng = np.random.default_rng(0)
    texture = Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    photos = Path(sklearn.__file__).parent / "datasets" / "images"
    return {"texture": png(texture), **{name: (photos / name).read_bytes() for name in ("china.jpg", "flower.jpg")}}


def held_out_images(count: int = 64) -> list[bytes]:
    """Held-out PneumoniaMNIST test images as 28-px PNGs (never seen by the fit or the threshold)."""
    with np.load(PNEUMONIAMNIST) as data:
        return [png(Image.fromarray(image)) for image in data["test_images"][:count]]


def scores_of(path: Path, images: list[bytes], record: ModelRecord) -> np.ndarray:
    batch = stack_batch([load_model_input(data, record.preprocessing) for data in images])
    (scores,) = open_session(path).run([ONNX_OOD_OUTPUT_NAME], {"input": batch})
    return np.asarray(scores, dtype=np.float64)


def test_a_far_image_is_flagged_and_held_out_test_images_are_not(exported: tuple[Checkpoint, ExportReport]) -> None:
    _, report = exported
    record = read_record(report.output)
    spec = record.ood
    assert spec is not None and (spec.fitted_on, spec.threshold_split, spec.kept_fraction) == ("train", "val", 0.95)
    assert [o.name for o in open_session(report.output).get_outputs()] == ["probabilities", "heatmaps", "ood_score"]
    far = far_images()
    far_scores = scores_of(report.output, list(far.values()), record)
    assert all(spec.flags(float(s)) for s in far_scores), dict(zip(far, far_scores, strict=True))
    test_scores = scores_of(report.output, held_out_images(), record)
    flagged = np.mean([spec.flags(float(s)) for s in test_scores])
    assert flagged <= 0.15, f"{flagged:.0%} of held-out test images flagged (threshold {spec.threshold:.3g})"
    assert not spec.flags(float(np.median(test_scores)))
    assert far_scores.min() > np.quantile(test_scores, 0.95)


def test_the_onnx_score_equals_a_reference_on_torch_features(exported: tuple[Checkpoint, ExportReport]) -> None:
    """ONNX `ood_score` == sqrt(Mahalanobis) of scikit-learn's Ledoit-Wolf fit on PyTorch's pooled features."""
    checkpoint, report = exported
    record = read_record(report.output)
    network = model_from_checkpoint(checkpoint).eval()

    def pooled(batch: np.ndarray) -> np.ndarray:
        caught: list[torch.Tensor] = []
        handle = network.classifier.register_forward_pre_hook(lambda module, args: caught.append(args[0]))
        with torch.inference_mode():
            network(torch.from_numpy(batch))
        handle.remove()
        return caught[0].reshape(len(batch), -1).double().numpy()

    train = split_inputs(record, "train", FIT_SAMPLES, seed=FIT_SEED)
    reference = LedoitWolf().fit(pooled(train.batch))
    probe = split_inputs(record, "val", 40)
    expected = np.sqrt(reference.mahalanobis(pooled(probe.batch)))
    (got,) = open_session(report.output).run([ONNX_OOD_OUTPUT_NAME], {"input": probe.batch})
    np.testing.assert_allclose(got, expected, rtol=REFERENCE_TOLERANCE)
    shrinkage = float(record.ood.fit["covariance"].rsplit(" ", 1)[1])  # type: ignore[union-attr]
    assert shrinkage == pytest.approx(reference.shrinkage_, abs=1e-4)


def test_the_threshold_keeps_95_percent_of_validation(exported: tuple[Checkpoint, ExportReport]) -> None:
    _, report = exported
    record = read_record(report.output)
    assert record.ood is not None
    val = split_inputs(record, "val", None)
    (scores,) = open_session(report.output).run([ONNX_OOD_OUTPUT_NAME], {"input": val.batch})
    kept = np.mean([not record.ood.flags(float(s)) for s in scores])
    assert 0.95 <= kept <= 0.95 + 2 / len(scores)


def test_the_record_round_trips_and_the_contract_ties_output_and_spec(
    exported: tuple[Checkpoint, ExportReport],
) -> None:
    _, report = exported
    record = read_record(report.output)
    assert record == report.record and record.ood is not None
    assert json.loads(record.to_json())["ood"]["method"] == "mahalanobis"
    model = onnx.load(str(report.output))
    with pytest.raises(ContractError, match="'ood' spec"):
        check_contract(model, record.model_copy(update={"ood": None}))


def test_fp16_and_int8_keep_the_output_with_thresholds_reset_on_their_own_scores(
    exported: tuple[Checkpoint, ExportReport], tmp_path: Path
) -> None:
    _, report = exported
    fp32 = read_record(report.output)
    assert fp32.ood is not None
    val = split_inputs(fp32, "val", None).batch
    (reference,) = open_session(report.output).run([ONNX_OOD_OUTPUT_NAME], {"input": val})
    fp16 = make_fp16(report.output, tmp_path / "model.fp16.onnx")
    int8 = quantize_int8(
        report.output, tmp_path / "model.int8.onnx", tolerance=1.0, min_agreement=0.0, max_delta_auroc=1.0,
        calibration_samples=32,
    )  # fmt: skip
    for variant in (fp16, int8):
        record = read_record(variant.output)
        assert record.ood is not None and record.ood.threshold == variant.record.ood.threshold  # type: ignore[union-attr]
        (scores,) = open_session(variant.output).run([ONNX_OOD_OUTPUT_NAME], {"input": val})
        assert np.all(np.isfinite(scores))
        kept = np.mean([not record.ood.flags(float(s)) for s in scores])
        assert 0.95 <= kept <= 0.95 + 2 / len(scores)
        assert np.corrcoef(scores, reference)[0, 1] > 0.95
    far = list(far_images().values())
    np.testing.assert_allclose(scores_of(fp16.output, far, fp32), scores_of(report.output, far, fp32), rtol=2e-2)
    quantized = onnx.load(str(int8.output))
    producers = {out: node.op_type for node in quantized.graph.node for out in node.output}
    whiten = next(node for node in quantized.graph.node if node.name == "ood/whiten")
    assert all(producers.get(name) != "DequantizeLinear" for name in whiten.input), "the score's MatMul was quantised"


def test_evaluation_reports_the_flagged_fraction_from_the_same_output(
    exported: tuple[Checkpoint, ExportReport],
) -> None:
    _, report = exported
    record = read_record(report.output)
    assert record.ood is not None
    metrics = evaluate_onnx(report.output, splits=("val",))
    ood = metrics["splits"]["val"]["ood"]
    val = split_inputs(record, "val", None)
    (scores,) = open_session(report.output).run([ONNX_OOD_OUTPUT_NAME], {"input": val.batch})
    assert ood["flagged"] == sum(record.ood.flags(float(s)) for s in scores)
    assert ood["flagged_fraction"] == pytest.approx(ood["flagged"] / len(scores))
    assert ood["threshold"] == record.ood.threshold


def test_an_exported_file_gets_the_score_by_graph_surgery_and_keeps_its_outputs(tmp_path: Path) -> None:
    _, base = shared_export()
    out = tmp_path / "model.onnx"
    report = add_ood_to_file(base.output, out, fit_samples=200)
    assert report.record.ood is not None and read_record(out) == report.record
    assert read_record(base.output).ood is None  # the original is untouched
    batch = split_inputs(report.record, "val", 8).batch
    before = open_session(base.output).run(None, {"input": batch})
    after = open_session(out).run(None, {"input": batch})
    assert len(after) == len(before) + 1
    for old, new in zip(before, after, strict=False):
        np.testing.assert_array_equal(old, new)
    with pytest.raises(ExportError, match="already has"):
        add_ood_to_file(out, tmp_path / "again.onnx")
    whitening = numpy_helper.to_array(
        next(i for i in onnx.load(str(out)).graph.initializer if i.name == "ood/whitening")
    )
    np.testing.assert_allclose(whitening, whitening.T, atol=1e-5)  # cov^-1/2 is symmetric


def test_the_cli_adds_the_score_once_and_export_takes_the_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from export.__main__ import main

    _, base = shared_export()
    out = tmp_path / "model.onnx"
    assert main(["ood", str(base.output), "--output", str(out), "--fit-samples", "100", "--kept-fraction", "0.9"]) == 0
    assert "added ood_score" in capsys.readouterr().out
    spec = read_record(out).ood
    assert spec is not None and spec.kept_fraction == 0.9 and spec.fit["samples"] == 100
    assert main(["ood", str(out), "--output", str(tmp_path / "twice.onnx")]) == 1
    assert "already has an out-of-distribution output" in capsys.readouterr().err
    fp16 = REPO / "models" / "pneumoniamnist-convnext_atto" / "1.0.0" / "model.fp16.onnx"
    assert main(["ood", str(fp16), "--output", str(tmp_path / "fp16.onnx")]) == 1
    assert "is the fp16 variant" in capsys.readouterr().err
    from export.__main__ import get_args_parser

    args = get_args_parser().parse_args(["onnx", "best.pt", "--model-dir", "models", "--ood", "--ood-fit-samples", "9"])
    assert (args.ood, args.ood_fit_samples, args.ood_kept_fraction) == (True, 9, 0.95)
