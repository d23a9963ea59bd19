"""The PACS harness itself: a real Orthanc started from a generated configuration receives a real DICOM from dcmtk's
storescu, shows it over REST and DICOMweb, and still has it after a stop and a start on the same ports and storage."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pydicom
import pytest
from data_location import DATA
from orthanc_support import (
    DicomPeer,
    OrthancServer,
    echoscu,
    orthanc,
    orthanc_factory,
    require_dcmtk,
    require_orthanc,
    storescu,
)

__all__ = ["orthanc", "orthanc_factory"]  # the fixtures, imported by name

SAMPLES = DATA / "dicom_samples"
JPEG_CHEST = SAMPLES / "SIIM_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819_CR_chest_MONOCHROME2_jpeg.dcm"
NO_META_CHEST = SAMPLES / "CR-MONO1-10-chest_MONOCHROME1_no_meta.dcm"


def sample(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"real DICOM sample not found at {path}")
    return path


def test_storescu_to_orthanc_is_read_back_and_survives_a_restart(orthanc: OrthancServer, tmp_path: Path) -> None:
    assert echoscu(host=orthanc.host, port=orthanc.dicom_port, called_ae=orthanc.ae_title).returncode == 0
    assert orthanc.count_instances() == 0
    source = sample(JPEG_CHEST)
    expected = pydicom.dcmread(source, stop_before_pixels=True)

    storescu([source], host=orthanc.host, port=orthanc.dicom_port, called_ae=orthanc.ae_title)

    [instance_id] = orthanc.wait_for_instances(1, timeout_s=20)
    tags = orthanc.instance_tags(instance_id)
    assert tags["SOPInstanceUID"] == expected.SOPInstanceUID
    assert tags["StudyInstanceUID"] == expected.StudyInstanceUID
    assert orthanc.instance_by_uid(expected.SOPInstanceUID) == instance_id
    [series] = orthanc.study_series(expected.StudyInstanceUID)
    assert series["MainDicomTags"]["SeriesInstanceUID"] == expected.SeriesInstanceUID
    assert series["Instances"] == [instance_id]
    stored = tmp_path / "stored.dcm"
    stored.write_bytes(orthanc.instance_file(instance_id))
    assert pydicom.dcmread(stored).PixelData == pydicom.dcmread(source).PixelData
    # DICOMweb (QIDO-RS) answers from the plugin.
    studies = httpx.get(f"{orthanc.dicomweb_url}/studies", timeout=10).json()
    assert [study["0020000D"]["Value"][0] for study in studies] == [expected.StudyInstanceUID]

    ports = (orthanc.http_port, orthanc.dicom_port)
    orthanc.stop()
    assert not orthanc.running
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{orthanc.url}/system", timeout=2)
    orthanc.start()
    assert (orthanc.http_port, orthanc.dicom_port) == ports
    assert orthanc.instances() == [instance_id]
    assert orthanc.count_instances() == 1


def test_every_sample_is_sent_in_its_own_transfer_syntax(orthanc: OrthancServer) -> None:
    """JPEG, JPEG 2000 (lossy and lossless), explicit VR and a file without meta header, in one association."""
    sources = sorted(SAMPLES.glob("*.dcm"))
    assert sample(NO_META_CHEST) in sources and len(sources) >= 5
    storescu(sources, host=orthanc.host, port=orthanc.dicom_port, called_ae=orthanc.ae_title)
    orthanc.wait_for_instances(len(sources), timeout_s=30)
    for source in sources:
        dataset = pydicom.dcmread(source, force=True)
        instance_id = orthanc.instance_by_uid(dataset.SOPInstanceUID)
        assert instance_id is not None, source.name
        stored = pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance_id)))
        assert stored.PixelData == dataset.PixelData, f"{source.name} was transcoded on the way"


def test_a_wrong_called_ae_title_is_refused(orthanc: OrthancServer) -> None:
    result = storescu(
        [sample(JPEG_CHEST)], host=orthanc.host, port=orthanc.dicom_port, called_ae="NOT-ORTHANC", check=False
    )
    assert result.returncode != 0
    assert orthanc.count_instances() == 0


def test_orthanc_forwards_to_a_modality_it_was_told_about(orthanc_factory: Callable[..., OrthancServer]) -> None:
    """Two harness servers: one is told about the other and C-STOREs to it (what the service's SCP will receive)."""
    receiver = orthanc_factory("receiver", ae_title="RECEIVER").start()
    sender = orthanc_factory("sender", ae_title="SENDER").start()
    sender.tell_about("ai", DicomPeer(receiver.ae_title, receiver.host, receiver.dicom_port))
    storescu([sample(JPEG_CHEST)], host=sender.host, port=sender.dicom_port, called_ae=sender.ae_title)
    [instance_id] = sender.wait_for_instances(1, timeout_s=20)
    with sender.client() as client:
        client.post("/modalities/ai/store", json={"Resources": [instance_id], "Synchronous": True}).raise_for_status()
    assert receiver.wait_for_instances(1, timeout_s=20) == [instance_id]  # Orthanc IDs hash the UIDs: same instance


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_tools_fail_under_ci_and_skip_elsewhere(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(outcome, match="apt-get install -y orthanc orthanc-dicomweb dcmtk"):
        require_orthanc()
    with pytest.raises(outcome, match="storescu"):
        require_dcmtk("storescu")
