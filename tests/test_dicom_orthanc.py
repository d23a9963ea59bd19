"""The DICOM node against a real PACS: Debian's Orthanc (tests/orthanc_support.py) receives the results.

dcmtk's storescu plays the modality; the service's SCP runs in a real uvicorn server; results go back to Orthanc
by C-STORE and are read back over Orthanc's REST API.
"""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from dicom_support import (
    CHEST_J2K,
    CHEST_JPEG,
    CHEST_NO_META,
    MODALITY_AE,
    MODEL_NAME,
    SCP_AE,
    chest_model,
    dicom_settings,
    require_samples,
    sr_probabilities,
    sr_source_uid,
    with_new_uids,
)
from orthanc_support import OrthancServer, orthanc, orthanc_factory, storescu
from service_support import RunningServer, metric_samples, running_server, sample, wait_until

__all__ = ["orthanc", "orthanc_factory"]  # the fixtures, imported by name


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_samples()
    return chest_model(tmp_path_factory.mktemp("models"))


def predicted(server: RunningServer, path: Path) -> dict[str, float]:
    with server.client() as client:
        answer = client.post(f"/v1/models/{MODEL_NAME}/predict", files={"file": ("x.dcm", path.read_bytes())})
    assert answer.status_code == 200, answer.text
    return {p["label"]: p["probability"] for p in answer.json()["results"][0]["predictions"]}


def srs_in(orthanc: OrthancServer) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(io.BytesIO(orthanc.instance_file(i))) for i in orthanc.instances_of_modality("SR")]


def test_c_store_in_sr_into_orthanc_in_the_right_study_with_predicts_probabilities(
    models: Path, orthanc: OrthancServer, tmp_path: Path
) -> None:
    files = [with_new_uids(f, tmp_path / "in") for f in (CHEST_JPEG, CHEST_J2K, CHEST_NO_META)]
    sources = {str(pydicom.dcmread(f, force=True).SOPInstanceUID): f for f in files}
    settings = dicom_settings(models, tmp_path / "outbox", f"dicom://{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}")
    assert settings.dicom_port is not None
    with running_server(settings) as server:
        storescu(files, host="127.0.0.1", port=settings.dicom_port, called_ae=SCP_AE, calling_ae=MODALITY_AE)
        orthanc.wait_for_instances(len(files), modality="SR")
        expected = {uid: predicted(server, path) for uid, path in sources.items()}
    srs = srs_in(orthanc)
    assert sorted(sr_source_uid(sr) for sr in srs) == sorted(sources)
    for sr in srs:
        source = pydicom.dcmread(sources[sr_source_uid(sr)], force=True, stop_before_pixels=True)
        assert sr.StudyInstanceUID == source.StudyInstanceUID
        series = orthanc.study_series(str(source.StudyInstanceUID))
        assert [s["MainDicomTags"]["Modality"] for s in series] == ["SR"]  # the study holds our new series
        assert sr_probabilities(sr) == expected[sr_source_uid(sr)]


def test_orthanc_down_then_up_every_result_arrives_once(models: Path, orthanc: OrthancServer, tmp_path: Path) -> None:
    files = [with_new_uids(CHEST_JPEG, tmp_path / "in") for _ in range(4)]
    settings = dicom_settings(models, tmp_path / "outbox", f"dicom://{orthanc.ae_title}@127.0.0.1:{orthanc.dicom_port}")
    assert settings.dicom_port is not None
    orthanc.stop()
    with running_server(settings) as server, server.client() as client:
        storescu(files, host="127.0.0.1", port=settings.dicom_port, called_ae=SCP_AE, calling_ae=MODALITY_AE)

        def retried() -> bool:
            outbox = client.get("/v1/dicom/outbox").json()
            return len(outbox["pending"]) == len(files) and all(p["attempts"] >= 2 for p in outbox["pending"])

        wait_until(retried, what="every result queued and retried while the PACS is down")
        samples = metric_samples(client)
        assert sample(samples, "serve_dicom_outbox_depth") == len(files)
        assert sample(samples, "serve_dicom_outbox_oldest_age_seconds") > 0
        assert {p["last_error"] for p in client.get("/v1/dicom/outbox").json()["pending"]} == {"connection_failed"}
        orthanc.start()
        orthanc.wait_for_instances(len(files), modality="SR")
        wait_until(lambda: client.get("/v1/dicom/outbox").json()["counts"]["pending"] == 0, what="an empty outbox")
        samples = metric_samples(client)
    srs = srs_in(orthanc)
    assert len(srs) == len(files) and len({sr_source_uid(sr) for sr in srs}) == len(files)
    assert sample(samples, "serve_dicom_results_sent_total") == len(files)  # each accepted once, none sent twice
    assert sample(samples, "serve_dicom_send_failures_total") >= 2 * len(files)
