"""The compose `pacs` profile's Orthanc configuration, run on Debian's Orthanc: docker/orthanc/orthanc.json and its
Lua script route every image instance to the AI node and never route back what the AI node sends (no loop).

A second Orthanc with the AI node's AE title stands in for the service here, so the routing rule is checked without
Docker (the compose test, tests/test_compose_pacs.py, runs it against the real service).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from data_location import DATA
from orthanc_support import DicomPeer, OrthancServer, orthanc_factory, storescu, wait_until
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

__all__ = ["orthanc_factory"]  # the fixture, imported by name

ROOT = Path(__file__).resolve().parents[1]
ORTHANC_CONFIG = ROOT / "docker" / "orthanc" / "orthanc.json"
SAMPLES = DATA / "dicom_samples"
CHEST = SAMPLES / "SIIM_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819_CR_chest_MONOCHROME2_jpeg.dcm"
# Set by the harness (ports, storage, loopback only, the modality's address, the script's path on this machine).
HARNESS_KEYS = {"Name", "HttpPort", "DicomPort", "DicomAet", "RemoteAccessAllowed", "DicomModalities", "LuaScripts"}


def shipped_config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads(ORTHANC_CONFIG.read_text())
    return config


@pytest.fixture
def routed(orthanc_factory: Callable[..., OrthancServer]) -> tuple[OrthancServer, OrthancServer]:
    """(pacs, ai): the shipped configuration routing to a stand-in AI node with the AE title it names."""
    config = shipped_config()
    ai_entry = config["DicomModalities"]["medimaging"]
    ai = orthanc_factory("ai", ae_title=ai_entry["AET"]).start()
    pacs = orthanc_factory(
        "pacs",
        ae_title=config["DicomAet"],
        modalities={"medimaging": DicomPeer(ai_entry["AET"], ai.host, ai.dicom_port)},
        lua_scripts=[ROOT / "docker" / "orthanc" / Path(path).name for path in config["LuaScripts"]],
        extra_config={key: value for key, value in config.items() if key not in HARNESS_KEYS},
    ).start()
    return pacs, ai


def copy_with_new_uids(source: Path, folder: Path, **attributes: str) -> Path:
    dataset = pydicom.dcmread(source)
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.UID(dataset.SOPInstanceUID)
    dataset.SeriesInstanceUID = generate_uid()
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


def text_sr(folder: Path, study_uid: str) -> Path:
    """A Basic Text SR in the study: a non-image instance (no Rows) from an ordinary modality AE."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = pydicom.uid.UID("1.2.840.10008.5.1.4.1.1.88.11")  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr = Dataset()
    sr.file_meta = meta
    sr.SOPClassUID, sr.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    sr.StudyInstanceUID, sr.SeriesInstanceUID = study_uid, generate_uid()
    sr.Modality, sr.PatientID, sr.PatientName = "SR", "ROUTING-TEST", "Routing^Test"
    sr.ValueType, sr.ContinuityOfContent, sr.CompletionFlag, sr.VerificationFlag = (
        "CONTAINER", "SEPARATE", "COMPLETE", "UNVERIFIED"
    )  # fmt: skip
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = (
        "18748-4",
        "LN",
        "Diagnostic Imaging Report",
    )
    sr.ConceptNameCodeSequence = [concept]
    path = folder / "text-sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    return path


def forward_jobs(pacs: OrthancServer) -> list[dict[str, Any]]:
    return pacs.jobs("DicomModalityStore")


def test_images_are_routed_to_the_ai_node_and_its_results_are_not(
    routed: tuple[OrthancServer, OrthancServer], tmp_path: Path
) -> None:
    pacs, ai = routed
    study_uid = pydicom.dcmread(CHEST, stop_before_pixels=True).StudyInstanceUID

    def send(path: Path, calling_ae: str) -> None:
        storescu([path], host=pacs.host, port=pacs.dicom_port, called_ae=pacs.ae_title, calling_ae=calling_ae)

    # What the AI node sends back: anything from its AE title, anything carrying its Manufacturer, and any non-image.
    send(copy_with_new_uids(CHEST, tmp_path), ai.ae_title)
    send(copy_with_new_uids(CHEST, tmp_path, Manufacturer="medimaging-platform"), "MODALITY")
    send(text_sr(tmp_path, study_uid), "MODALITY")
    # Then an ordinary image from a modality: the one instance routed.
    send(CHEST, "MODALITY")

    [routed_id] = ai.wait_for_instances(1, timeout_s=30)
    assert ai.instance_tags(routed_id)["SOPInstanceUID"] == pydicom.dcmread(CHEST).SOPInstanceUID
    assert pacs.count_instances() == 4
    # Lua callbacks run in arrival order: by the time the last one made its job, the three before made none.
    jobs = forward_jobs(pacs)
    assert len(jobs) == 1 and jobs[0]["State"] == "Success", jobs
    assert ai.count_instances() == 1


def test_a_forward_to_an_ai_node_that_is_down_is_a_failed_job_that_can_be_resubmitted(
    routed: tuple[OrthancServer, OrthancServer],
) -> None:
    pacs, ai = routed
    ai.stop()
    storescu([CHEST], host=pacs.host, port=pacs.dicom_port, called_ae=pacs.ae_title, calling_ae="MODALITY")
    wait_until(lambda: [job["State"] for job in forward_jobs(pacs)] == ["Failure"], what="a failed job", timeout_s=60)
    [job] = forward_jobs(pacs)
    ai.start()
    with pacs.client() as client:
        client.post(f"/jobs/{job['ID']}/resubmit", content="{}").raise_for_status()
    assert len(ai.wait_for_instances(1, timeout_s=60)) == 1
