"""Intended use: set by a user (training config, `--set`, export flags, `export intended-use`), carried into the
record and the card, and enforced by a real service on the bundled model's real DICOMs.

The bundled 1.0.0 record restricts Modality (CR, DX), BodyPartExamined (CHEST) and ViewPosition (PA, AP). The rule
for a DICOM that lacks a restricted tag (absent or empty) is to refuse it (medcore.record.IntendedUse).
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
import yaml
from data_location import DATA
from PIL import Image
from service_support import RunningServer, running_server
from trainer_support import PNEUMONIAMNIST, QUICK_FLAGS

from export.__main__ import main as export_main
from export.card import render_card
from export.metadata import EXPORT_METADATA_KEY, read_metadata, read_record
from medcore.record import IntendedUse
from service.config import BUNDLED_MODEL, Settings
from trainer.checkpoint import load_checkpoint
from trainer.cli import main as trainer_main
from trainer.config import load_config, load_intended_use

REPO = Path(__file__).resolve().parents[1]
DICOMS = DATA / "dicom_samples"
CHEST_DICOMS = (
    "CR-MONO1-10-chest_MONOCHROME1_no_meta.dcm",
    "RG1_J2KI_CR_chest_PA_MONOCHROME1_j2k.dcm",
    "SIIM_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819_CR_chest_MONOCHROME2_jpeg.dcm",
)
CERVICAL_SPINE = "pydicom_dicomdirtests_CR1_6154_16x16_MONOCHROME1.dcm"  # CR, CSPINE, LL
TIBIA = "RG3_J2KR_CR_tibia_MONOCHROME1_j2k_lossless.dcm"  # CR, EXTREMITY, AP
CHEST_USE = REPO / "configs" / "intended_use_chest_pa_ap.yaml"


@pytest.fixture(scope="module")
def bundled() -> Iterator[RunningServer]:
    with running_server(Settings(model_path=BUNDLED_MODEL, decode_threads=1, intra_op_threads=1)) as server:
        yield server


def post_dicom(server: RunningServer, data: bytes) -> tuple[int, dict]:
    with server.client() as client:
        response = client.post("/predict", files={"file": ("study.dcm", data, "application/dicom")})
    return response.status_code, response.json()


def edited_chest(edit: Callable[[pydicom.Dataset], None]) -> bytes:
    """The SIIM chest PA film with one header edit (pixels untouched)."""
    dataset = pydicom.dcmread(DICOMS / CHEST_DICOMS[2])
    edit(dataset)
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_the_bundled_record_restricts_the_three_dicom_attributes() -> None:
    use = read_record(BUNDLED_MODEL).intended_use
    assert (use.modalities, use.body_parts, use.view_positions) == (("CR", "DX"), ("CHEST",), ("PA", "AP"))
    for variant in ("model.fp16.onnx", "model.int8.onnx"):
        assert read_record(BUNDLED_MODEL.with_name(variant)).intended_use == use
    edits = json.loads(read_metadata(BUNDLED_MODEL)[EXPORT_METADATA_KEY])["record_edits"]
    assert [e["field"] for e in edits] == ["intended_use"]  # the record says it was edited after export


@pytest.mark.parametrize("name", [CERVICAL_SPINE, TIBIA])
def test_non_chest_dicoms_are_refused_with_outside_intended_use(bundled: RunningServer, name: str) -> None:
    status, body = post_dicom(bundled, (DICOMS / name).read_bytes())
    assert status == 422, body
    assert body["code"] == "outside_intended_use"
    assert "BodyPartExamined" in body["detail"] and "CHEST" in body["detail"]


@pytest.mark.parametrize("name", CHEST_DICOMS)
def test_chest_dicoms_are_answered(bundled: RunningServer, name: str) -> None:
    status, body = post_dicom(bundled, (DICOMS / name).read_bytes())
    assert status == 200, body
    assert 0.0 <= body["results"][0]["predictions"][0]["probability"] <= 1.0


def _set(keyword: str, value: str) -> Callable[[pydicom.Dataset], None]:
    return lambda dataset: setattr(dataset, keyword, value)


def _drop(keyword: str) -> Callable[[pydicom.Dataset], None]:
    return lambda dataset: delattr(dataset, keyword)


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_set("Modality", "CT"), "Modality CT is outside"),
        (_set("Modality", "MR"), "Modality MR is outside"),
        (_set("ViewPosition", "LL"), "ViewPosition LL is outside"),
        (_set("ViewPosition", "LATERAL"), "ViewPosition LATERAL is outside"),
        (_set("BodyPartExamined", "ABDOMEN"), "BodyPartExamined ABDOMEN is outside"),
        (_drop("Modality"), "Modality is absent"),  # the documented rule: a missing restricted tag is refused
        (_drop("BodyPartExamined"), "BodyPartExamined is absent"),
        (_set("ViewPosition", ""), "ViewPosition is absent"),  # empty counts as missing
    ],
    ids=["ct", "mr", "lateral-ll", "lateral", "abdomen", "no-modality", "no-body-part", "empty-view"],
)
def test_other_modalities_views_and_missing_tags_are_refused(
    bundled: RunningServer, edit: Callable[[pydicom.Dataset], None], words: str
) -> None:
    status, body = post_dicom(bundled, edited_chest(edit))
    assert status == 422, body
    assert body["code"] == "outside_intended_use" and words in body["detail"]


def test_lower_case_codes_and_dx_are_inside_and_images_without_tags_are_answered(bundled: RunningServer) -> None:
    def dx_lower_case(dataset: pydicom.Dataset) -> None:
        dataset.Modality, dataset.BodyPartExamined, dataset.ViewPosition = "DX", "chest", "ap"

    assert post_dicom(bundled, edited_chest(dx_lower_case))[0] == 200
    png = io.BytesIO()
    Image.new("L", (64, 64), 128).save(png, format="PNG")
    assert post_dicom(bundled, png.getvalue())[0] == 200  # a PNG carries no DICOM tags: not gated


def test_the_config_section_accepts_set_style_lists_and_names_bad_values() -> None:
    config = load_config(None, {"intended_use.modalities": "cr,DX", "intended_use.view_positions": ["pa"]})
    assert config.intended_use.modalities == ("CR", "DX") and config.intended_use.view_positions == ("PA",)
    assert config.to_dict()["intended_use"]["body_parts"] is None
    with pytest.raises(ValueError, match=r"intended_use\.modalities: modalities is empty"):
        load_config(None, {"intended_use.modalities": []})
    with pytest.raises(ValueError, match="not a DICOM code string"):
        load_config(None, {"intended_use.body_parts": "chest/abdomen"})
    with pytest.raises(ValueError, match=r"Unknown config key 'intended_use\.modality'"):
        load_config(None, {"intended_use.modality": "CR"})
    # The default recipe names the chest file, so the model it trains is gated like the bundled one.
    default = load_config(REPO / "configs" / "kermany_default.yaml")
    assert default.intended_use.to_record() == IntendedUse(**yaml.safe_load(CHEST_USE.read_text()))
    # A training config works as an --intended-use file too, through the file it names.
    assert load_intended_use(REPO / "configs" / "kermany_default.yaml") == yaml.safe_load(CHEST_USE.read_text())


def test_a_users_intended_use_reaches_the_record_the_export_and_the_card(tmp_path: Path) -> None:
    run = tmp_path / "run"
    flags = ["--data-kind", "medmnist", "--data-path", str(PNEUMONIAMNIST), "--limit", "32", *QUICK_FLAGS]
    use = [
        "--set", "intended_use.modalities=DX",
        "--set", "intended_use.body_parts=CHEST",
        "--set", "intended_use.description=Adult PA chest films at our site",
        "--set", "intended_use.out_of_scope=[children]",
        "--set", "report.temperature_scaling=true",
    ]  # fmt: skip
    assert trainer_main(["train", *flags, *use, "--epochs", "1", "--output-dir", str(run)]) == 0
    record = load_checkpoint(run / "best.pt").record
    assert record.intended_use == IntendedUse(
        description="Adult PA chest films at our site",
        modalities=("DX",),
        body_parts=("CHEST",),
        out_of_scope=("children",),
    )
    calibration = record.provenance.metrics["calibration"]
    assert calibration["temperature"] > 0 and set(calibration["ece"]) == set(calibration["ece_before_temperature"])

    model = tmp_path / "models" / record.name / record.version / "model.onnx"
    assert export_main(["onnx", str(run / "best.pt"), "--model-dir", str(tmp_path / "models")]) == 0
    assert read_record(model).intended_use == record.intended_use
    card = render_card(model, None)
    assert "- DICOM Modality (0008,0060): DX" in card and "- DICOM BodyPartExamined (0018,0015): CHEST" in card
    assert "not restricted" not in card and "ViewPosition" not in card.split("## Model")[0]
    assert "Adult PA chest films at our site" in card and "- Out of scope: children" in card
    assert "**Calibrated on validation**" in card and " -> " in card.split("**Calibrated on validation**")[1]

    # Export flags override the checkpoint's: a file, then one field on top of it.
    again = tmp_path / "again.onnx"
    assert export_main(["onnx", str(run / "best.pt"), str(again), "--intended-use", str(CHEST_USE),
                        "--view-positions", "PA", "--no-heatmaps"]) == 0  # fmt: skip
    written = read_record(again).intended_use
    assert (written.modalities, written.body_parts, written.view_positions) == (("CR", "DX"), ("CHEST",), ("PA",))
    assert "--intended-use INTENDED_USE.yaml" in render_card(again, None)


def test_export_intended_use_rewrites_every_variant_and_keeps_the_graph(tmp_path: Path) -> None:
    import onnx

    folder = tmp_path / "m" / "1"
    folder.mkdir(parents=True)
    for name in ("model.onnx", "model.int8.onnx"):
        shutil.copy(BUNDLED_MODEL.with_name(name), folder / name)
    before = onnx.load(str(folder / "model.onnx")).graph.SerializeToString()
    assert export_main(["intended-use", str(folder / "model.onnx"), "--modalities", "dx", "--body-parts", "any"]) == 0
    for name in ("model.onnx", "model.int8.onnx"):
        use = read_record(folder / name).intended_use
        assert (use.modalities, use.body_parts, use.view_positions) == (("DX",), None, ("PA", "AP"))
    assert onnx.load(str(folder / "model.onnx")).graph.SerializeToString() == before
    edits = json.loads(read_metadata(folder / "model.onnx")[EXPORT_METADATA_KEY])["record_edits"]
    assert edits[-1]["before"]["modalities"] == ["CR", "DX"]
    assert export_main(["intended-use", str(folder / "model.onnx"), "--modalities", "C/T"]) == 1
    assert export_main(["intended-use", str(folder / "model.onnx")]) == 1  # nothing to set


def test_the_bundled_card_states_the_restrictions_and_how_to_read_the_probability() -> None:
    card = (BUNDLED_MODEL.parent / "MODEL_CARD.md").read_text(encoding="utf-8")
    for line in ("- DICOM Modality (0008,0060): CR, DX", "- DICOM BodyPartExamined (0018,0015): CHEST",
                 "- DICOM ViewPosition (0018,5101): PA, AP"):  # fmt: skip
        assert line in card
    assert "not restricted" not in card and "lacks a restricted tag (absent or empty) likewise" in card
    reading = card.split("## Reading the probability", 1)[1].split("\n## ", 1)[0]
    assert "The `pneumonia` threshold is 0.082" in reading and "well below 0.5" in reading
    assert "**Not calibrated**" in reading and "Expected calibration error (15 equal-width bins): val" in reading
