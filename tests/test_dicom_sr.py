"""The Structured Report: valid for dcmtk (`dsrdump` checks the content tree against Comprehensive SR's relationship
constraints, `dcmdump` the encoding) and for pydicom, with exactly what the issue lists and nothing else of the source.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
from datetime import datetime
from pathlib import Path

import pydicom
import pytest
from dicom_support import CHEST_JPEG, INTENDED_USE, require_samples, sr_probabilities
from orthanc_support import require_dcmtk
from pydicom.dataset import Dataset
from service_support import TINY_RECORD

from medcore.decision import LabelDecision, decide
from medcore.record import ModelRecord
from service.dicom.sr import COMPREHENSIVE_SR, DISCLAIMER, Outcome, build_sr, label_code, record_hash

RECORD = ModelRecord.model_validate({**TINY_RECORD, "intended_use": INTENDED_USE})
NOW = datetime(2026, 12, 4, 18, 30, 5)
# What an SR of ours may hold at its top level: SR document modules, equipment, and the source's patient and study.
ALLOWED = {
    "SpecificCharacterSet",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyDate",
    "ContentDate",
    "StudyTime",
    "ContentTime",
    "AccessionNumber",
    "Modality",
    "Manufacturer",
    "ReferringPhysicianName",
    "SeriesDescription",
    "ManufacturerModelName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "SoftwareVersions",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "StudyID",
    "SeriesNumber",
    "InstanceNumber",
    "ValueType",
    "ConceptNameCodeSequence",
    "ContinuityOfContent",
    "CompletionFlag",
    "VerificationFlag",
    "ContentSequence",
    "CurrentRequestedProcedureEvidenceSequence",
    "PerformedProcedureCodeSequence",
    "ReferencedPerformedProcedureStepSequence",
    "StudyDescription",
    "IssuerOfPatientID",
    "PatientBirthTime",
    "OtherPatientIDsSequence",
    "PatientComments",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "IssuerOfAccessionNumberSequence",
    "IssuerOfPatientIDQualifiersSequence",
}


@pytest.fixture(scope="module")
def source() -> Dataset:
    require_samples()
    dataset = pydicom.dcmread(CHEST_JPEG, stop_before_pixels=True)
    dataset.PatientName, dataset.PatientID, dataset.AccessionNumber = "Test^Patient", "PID-1", "ACC-1"
    dataset.InstitutionName, dataset.OperatorsName = "Not To Be Copied Hospital", "Not^Copied"
    return dataset


def decisions(probability: float) -> list[LabelDecision]:
    import numpy as np

    (row,) = decide(np.array([[probability]], dtype=np.float32), RECORD)
    return row


def encoded(sr: Dataset, folder: Path) -> Path:
    path = folder / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    return path


def concepts(items: pydicom.Sequence) -> list[str]:
    return [item.ConceptNameCodeSequence[0].CodeMeaning for item in items]


def test_the_sr_is_valid_for_dsrdump_and_dcmdump(source: Dataset, tmp_path: Path) -> None:
    require_dcmtk("dsrdump", "dcmdump")
    outcome = Outcome(decisions(0.7), ood_score=31.5, out_of_distribution=True, ood_warning="Looks unlike training.")
    sr = build_sr(source, RECORD, outcome, variant="fp32", now=NOW)
    path = encoded(sr, tmp_path)
    dumped = subprocess.run(["dsrdump", "+Pu", "+Pl", str(path)], capture_output=True, text=True, check=False)
    assert dumped.returncode == 0 and dumped.stderr == "", dumped.stderr
    text = dumped.stdout
    assert text.startswith("Comprehensive SR Document")
    expected_lines = (
        '"Probability")="0.699999988079"',
        '"Decision threshold")="0.5"',
        '"Model decision")=(373066001,SCT,"Yes")',
        '"Outside training distribution")=(373066001,SCT,"Yes")',
        '"Out-of-distribution score")="31.5"',
        '"Out-of-distribution warning")="Looks unlike training."',
        '"Algorithm Name")="tiny-test"',
        '"Algorithm Version")="0.0.1"',
        "Model record SHA-256",
        "Not a certified medical device",
        str(source.SOPInstanceUID),
        '"Out of scope")="paediatric',
    )
    for expected in expected_lines:
        assert expected in text, expected
    assert "invalid" not in text.lower()
    raw = subprocess.run(["dcmdump", "-E", str(path)], capture_output=True, text=True, check=False)
    assert raw.returncode == 0 and raw.stderr == "", raw.stderr


def test_the_sr_holds_the_model_the_numbers_and_the_source_reference(source: Dataset, tmp_path: Path) -> None:
    sr = pydicom.dcmread(encoded(build_sr(source, RECORD, Outcome(decisions(0.3)), variant="int8", now=NOW), tmp_path))
    assert sr.SOPClassUID == COMPREHENSIVE_SR and sr.Modality == "SR"
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID and sr.SOPInstanceUID != source.SOPInstanceUID
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    top = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}
    assert top["Algorithm Name"].TextValue == RECORD.name and top["Algorithm Version"].TextValue == RECORD.version
    assert top["Model record SHA-256"].TextValue == hashlib.sha256(RECORD.to_json().encode()).hexdigest()
    assert top["Model variant"].TextValue == "int8"
    assert top["Disclaimer"].TextValue == DISCLAIMER and "not a certified medical device" in DISCLAIMER.lower()
    assert top["Intended use"].TextValue == INTENDED_USE["description"]
    assert top["Source of Measurement"].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert "Outside training distribution" not in top and "Out-of-distribution score" not in top  # none given
    (finding,) = [item for item in sr.ContentSequence if item.ValueType == "CONTAINER"]
    assert concepts(finding.ContentSequence) == ["Finding", "Probability", "Decision threshold", "Model decision"]
    probability, threshold = (finding.ContentSequence[i].MeasuredValueSequence[0] for i in (1, 2))
    assert float(probability.FloatingPointValue) == pytest.approx(0.3, abs=1e-7)
    assert float(threshold.FloatingPointValue) == 0.5 and str(threshold.NumericValue) == "0.5"
    assert probability.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    verdict = finding.ContentSequence[3]
    assert verdict.ConceptCodeSequence[0].CodeMeaning == "No"
    assert verdict.ContentSequence[0].RelationshipType == "INFERRED FROM"
    assert sr_probabilities(sr) == {"pneumonia": float(decisions(0.3)[0].probability)}


def test_only_the_patient_and_study_modules_come_from_the_source(source: Dataset, tmp_path: Path) -> None:
    sr = pydicom.dcmread(encoded(build_sr(source, RECORD, Outcome(decisions(0.3)), variant="fp32", now=NOW), tmp_path))
    assert {element.keyword for element in sr} <= ALLOWED
    assert "InstitutionName" not in sr and "OperatorsName" not in sr and "PixelData" not in sr
    for keyword in ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID", "StudyDate"):
        assert sr[keyword].value == source[keyword].value
    assert sr.Manufacturer == "medimaging-platform"  # what tells a PACS (and our own node) this is a result


def test_the_same_instance_and_model_give_the_same_uids_and_another_version_others(source: Dataset) -> None:
    first = build_sr(source, RECORD, Outcome(decisions(0.3)), variant="fp32", now=NOW)
    again = build_sr(source, RECORD, Outcome(decisions(0.3)), variant="fp32", now=datetime.now())
    other = build_sr(
        source, RECORD.model_copy(update={"version": "0.0.2"}), Outcome(decisions(0.3)), variant="fp32", now=NOW
    )
    assert (first.SOPInstanceUID, first.SeriesInstanceUID) == (again.SOPInstanceUID, again.SeriesInstanceUID)
    assert first.SOPInstanceUID != other.SOPInstanceUID and first.SeriesInstanceUID != other.SeriesInstanceUID
    assert len(str(first.SOPInstanceUID)) <= 64 and record_hash(RECORD) != record_hash(other_record())


def other_record() -> ModelRecord:
    return RECORD.model_copy(update={"version": "0.0.2"})


def test_a_multiclass_result_has_no_threshold_and_one_positive_label(source: Dataset, tmp_path: Path) -> None:
    import numpy as np

    labels = ["normal", "a-very-long-label-name"]
    record = ModelRecord.model_validate(
        {**TINY_RECORD, "task": "multiclass", "labels": labels, "thresholds": dict.fromkeys(labels, 0.5)}
    )
    (row,) = decide(np.array([[0.2, 0.8]], dtype=np.float32), record)
    sr = pydicom.dcmread(encoded(build_sr(source, record, Outcome(row), variant="fp32", now=NOW), tmp_path))
    findings = [item for item in sr.ContentSequence if item.ValueType == "CONTAINER"]
    assert [concepts(f.ContentSequence) for f in findings] == [["Finding", "Probability", "Model decision"]] * 2
    verdicts = [f.ContentSequence[2].ConceptCodeSequence[0].CodeMeaning for f in findings]
    assert verdicts == ["No", "Yes"]
    long_code = findings[1].ContentSequence[0].ConceptCodeSequence[0]
    assert long_code.CodeMeaning == "a-very-long-label-name" and len(long_code.CodeValue) <= 16
    assert long_code.CodeValue == label_code("a-very-long-label-name").value
    buffer = io.BytesIO()
    sr.save_as(buffer)  # still encodes
