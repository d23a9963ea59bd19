"""The heatmap Secondary Capture (SERVE_DICOM_HEATMAP_SC=true): burned-in warning, overlay, and no loops."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_support import (
    CHEST_JPEG,
    MODALITY_AE,
    SCP_AE,
    chest_model,
    destination,
    dicom_settings,
    require_samples,
    with_new_uids,
)
from orthanc_support import require_dcmtk, storescu
from service_support import running_server, wait_until

from service.dicom.secondary_capture import SECONDARY_CAPTURE, WARNING_TEXT, banner


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_samples()
    require_dcmtk("storescu", "dcmdump")
    return chest_model(tmp_path_factory.mktemp("models"), heatmaps=True)


def test_the_secondary_capture_burns_in_the_warning_over_the_heatmap_and_is_never_run_again(
    models: Path, tmp_path: Path
) -> None:
    source = with_new_uids(CHEST_JPEG, tmp_path / "in")
    header = pydicom.dcmread(source, stop_before_pixels=True)
    with destination() as dest:
        settings = dicom_settings(models, tmp_path / "outbox", dest.url, dicom_heatmap_sc=True)
        assert settings.dicom_port is not None
        with running_server(settings) as server, server.client() as client:
            storescu([source], host="127.0.0.1", port=settings.dicom_port, called_ae=SCP_AE, calling_ae=MODALITY_AE)
            wait_until(lambda: len(dest.received) >= 2, what="the SR and the Secondary Capture")
            results = {str(ds.SOPClassUID): ds for ds in dest.datasets()}
            sc = results[SECONDARY_CAPTURE]
            sr = results["1.2.840.10008.5.1.4.1.1.88.33"]
            back = [tmp_path / "sc.dcm", tmp_path / "sr.dcm"]
            sc.save_as(back[0], enforce_file_format=True)
            sr.save_as(back[1], enforce_file_format=True)
            storescu(back, host="127.0.0.1", port=settings.dicom_port, called_ae=SCP_AE, calling_ae=MODALITY_AE)
            skipped = client.get("/v1/dicom/outbox").json()["recently_skipped"]
    assert len(dest.received) == 2  # routing the results back made nothing new
    assert {s["reason"] for s in skipped} == {"own_result", "not_an_image"}
    dumped = subprocess.run(["dcmdump", "-E", str(back[0])], capture_output=True, text=True, check=False)
    assert dumped.returncode == 0 and dumped.stderr == ""
    assert sc.StudyInstanceUID == header.StudyInstanceUID == sr.StudyInstanceUID
    assert sc.SeriesInstanceUID not in (sr.SeriesInstanceUID, header.SeriesInstanceUID)
    assert list(sc.ImageType) == ["DERIVED", "SECONDARY"] and sc.BurnedInAnnotation == "YES"
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == header.SOPInstanceUID
    assert sc.PatientID == header.PatientID and "InstitutionName" not in sc
    pixels = sc.pixel_array
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and sc.Columns == 512  # the display size of a 1024² image
    probability = next(
        item.MeasuredValueSequence[0].FloatingPointValue
        for group in sr.ContentSequence
        if group.ValueType == "CONTAINER"
        for item in group.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeMeaning == "Probability"
    )
    expected = banner(sc.Columns, [WARNING_TEXT, f"pneumonia heatmap, p={probability:.3f}; chest-test 0.0.1"])
    band = pixels[: expected.height]
    assert np.array_equal(band, np.asarray(expected))  # the warning is in the pixels themselves
    assert (band == 255).all(axis=2).sum() > 500  # and it is real text, not an empty band
    picture = pixels[expected.height :].astype(int)
    assert (np.abs(picture[..., 0] - picture[..., 2]) > 20).any()  # colour: the heatmap lies over the grey image


def test_a_heatmap_capture_for_a_model_without_heatmaps_stops_the_start(tmp_path: Path) -> None:
    models = chest_model(tmp_path / "models", heatmaps=False)
    settings = dicom_settings(models, tmp_path / "outbox", "dicom://X@127.0.0.1:1", dicom_heatmap_sc=True)
    with pytest.raises(RuntimeError, match="failed to start"), running_server(settings):
        pass
