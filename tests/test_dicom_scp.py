"""The C-STORE SCP end to end: dcmtk's storescu (the modality) -> the service -> a pynetdicom C-STORE destination.

A real uvicorn server with the SCP on loopback, the tiny model with a chest-radiograph intended use, real DICOMs
(JPEG baseline, JPEG 2000, a bare ACR-NEMA data set without meta header, pydicom's CT), and the real dcmtk tools.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from dicom_support import (
    CHEST_J2K,
    CHEST_JPEG,
    CHEST_NO_META,
    MODALITY_AE,
    MODEL_NAME,
    SAMPLES,
    SCP_AE,
    chest_model,
    destination,
    dicom_settings,
    require_samples,
    sr_probabilities,
    sr_source_uid,
    with_new_uids,
)
from orthanc_support import echoscu, require_dcmtk, storescu
from pydicom.data import get_testdata_file
from pydicom.uid import MPEG2MPML, ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import ComputedRadiographyImageStorage  # type: ignore[attr-defined]
from service_support import (
    RunningServer,
    build_tiny_model,
    gated_server,
    metric_samples,
    record_for,
    running_server,
    sample,
    wait_until,
)

from service.config import Settings


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_samples()
    require_dcmtk("storescu", "echoscu")
    return chest_model(tmp_path_factory.mktemp("models"))


def send(settings: Settings, files: list[Path], calling: str = MODALITY_AE, *, check: bool = True) -> str:
    assert settings.dicom_port is not None
    result = storescu(
        files, host="127.0.0.1", port=settings.dicom_port, called_ae=SCP_AE, calling_ae=calling, check=check
    )
    return result.stdout + result.stderr


def predicted(server: RunningServer, path: Path) -> dict[str, float]:
    with server.client() as client:
        answer = client.post(f"/v1/models/{MODEL_NAME}/predict", files={"file": ("x.dcm", path.read_bytes())})
    assert answer.status_code == 200, answer.text
    return {p["label"]: p["probability"] for p in answer.json()["results"][0]["predictions"]}


def test_storescu_instances_come_back_as_srs_in_their_study_with_predicts_probabilities(
    models: Path, tmp_path: Path
) -> None:
    files = [with_new_uids(f, tmp_path / "in") for f in (CHEST_JPEG, CHEST_J2K, CHEST_NO_META)]
    sources = {str(pydicom.dcmread(f, force=True).SOPInstanceUID): f for f in files}
    with destination() as dest:
        settings = dicom_settings(models, tmp_path / "outbox", dest.url)
        with running_server(settings) as server:
            send(settings, files)
            wait_until(lambda: len(dest.received) >= len(files), what="one SR per instance")
            expected = {uid: predicted(server, path) for uid, path in sources.items()}
            with server.client() as client:
                samples = metric_samples(client)
                outbox = client.get("/v1/dicom/outbox").json()
    srs = dest.datasets()
    assert len(srs) == len(files)
    for sr in srs:
        reference = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        source_uid = str(reference.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        source = pydicom.dcmread(sources[source_uid], force=True, stop_before_pixels=True)
        assert sr.Modality == "SR" and sr.StudyInstanceUID == source.StudyInstanceUID
        assert sr.SeriesInstanceUID != source.SeriesInstanceUID and sr.SOPInstanceUID != source.SOPInstanceUID
        assert str(sr.PatientID) == str(source.get("PatientID", ""))
        assert sr_probabilities(sr) == expected[source_uid]  # exactly /predict's floats
    assert sample(samples, "serve_dicom_instances_received_total", via="dimse") == len(files)
    assert sample(samples, "serve_dicom_instances_inferred_total") == len(files)
    assert sample(samples, "serve_dicom_results_sent_total") == len(files)
    assert outbox["counts"]["pending"] == 0 and outbox["counts"]["instances_inferred"] == len(files)


def test_an_instance_sent_twice_gets_one_result(models: Path, tmp_path: Path) -> None:
    path = with_new_uids(CHEST_JPEG, tmp_path / "in")
    with destination() as dest:
        settings = dicom_settings(models, tmp_path / "outbox", dest.url)
        with running_server(settings) as server:
            send(settings, [path])
            send(settings, [path])  # a modality retrying, or a PACS routing the instance again
            wait_until(lambda: len(dest.received) >= 1, what="the SR")
            with server.client() as client:
                samples = metric_samples(client)
    assert len(dest.received) == 1
    assert sample(samples, "serve_dicom_instances_duplicate_total") == 1
    assert sample(samples, "serve_dicom_instances_inferred_total") == 1


def test_a_ct_instance_is_skipped_with_its_reason_and_never_inferred(models: Path, tmp_path: Path) -> None:
    ct = Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    tibia_free_ct = with_new_uids(ct, tmp_path / "in")
    with destination() as dest:
        settings = dicom_settings(models, tmp_path / "outbox", dest.url)
        with running_server(settings) as server:
            send(settings, [tibia_free_ct])  # the C-STORE itself succeeds: the node received it
            with server.client() as client:
                outbox = client.get("/v1/dicom/outbox").json()
                samples = metric_samples(client)
    uid = str(pydicom.dcmread(tibia_free_ct).SOPInstanceUID)
    assert outbox["recently_skipped"] == [{"sop_instance_uid": uid, "reason": "outside_intended_use"}]
    assert outbox["counts"]["instances_skipped"] == 1 and outbox["counts"]["pending"] == 0
    assert sample(samples, "serve_dicom_instances_skipped_total", reason="outside_intended_use") == 1
    assert sample(samples, "serve_dicom_instances_inferred_total") == 0
    assert sample(samples, "serve_batch_size_count") == 0  # the model never saw it
    assert dest.received == []
    record = (tmp_path / "outbox" / "instances" / f"{uid}.json").read_text()
    assert "Modality CT is outside the model's use (CR, DX)" in record


def test_an_unknown_caller_is_rejected_and_a_known_one_echoed(models: Path, tmp_path: Path) -> None:
    with destination() as dest:
        settings = dicom_settings(models, tmp_path / "outbox", dest.url)
        assert settings.dicom_port is not None
        with running_server(settings) as server:
            known = echoscu(host="127.0.0.1", port=settings.dicom_port, called_ae=SCP_AE, calling_ae=MODALITY_AE)
            unknown = echoscu(host="127.0.0.1", port=settings.dicom_port, called_ae=SCP_AE, calling_ae="INTRUDER")
            wrong_called = echoscu(
                host="127.0.0.1", port=settings.dicom_port, called_ae="OTHER", calling_ae=MODALITY_AE
            )
            refused_store = send(settings, [with_new_uids(CHEST_JPEG, tmp_path)], calling="INTRUDER", check=False)
            with server.client() as client:
                samples = metric_samples(client)
    assert known.returncode == 0, known.stdout + known.stderr
    assert unknown.returncode != 0 and "Calling AE Title Not Recognized" in unknown.stdout + unknown.stderr
    assert (
        wrong_called.returncode != 0 and "Called AE Title Not Recognized" in wrong_called.stdout + wrong_called.stderr
    )
    assert "Association Rejected" in refused_store
    assert sample(samples, "serve_dicom_associations_total", outcome="rejected_caller") == 2
    assert sample(samples, "serve_dicom_instances_received_total", via="dimse") == 0
    assert dest.received == []


def test_a_transfer_syntax_it_cannot_decode_is_refused_in_negotiation(models: Path, tmp_path: Path) -> None:
    with destination() as dest:
        settings = dicom_settings(models, tmp_path / "outbox", dest.url)
        assert settings.dicom_port is not None
        with running_server(settings):
            ae = AE(ae_title=MODALITY_AE)
            ae.add_requested_context(ComputedRadiographyImageStorage, [MPEG2MPML])
            ae.add_requested_context(ComputedRadiographyImageStorage, [ExplicitVRLittleEndian])
            assoc = ae.associate("127.0.0.1", settings.dicom_port, ae_title=SCP_AE)
            try:
                assert assoc.is_established
                results = {cx.transfer_syntax[0]: cx.result for cx in assoc.rejected_contexts}
                accepted = [cx.transfer_syntax[0] for cx in assoc.accepted_contexts]
            finally:
                assoc.release()
    assert results == {MPEG2MPML: 0x04}  # PS3.8 9.3.3.2: transfer syntaxes not supported
    assert accepted == [ExplicitVRLittleEndian]


def test_a_truncated_instance_is_refused_with_no_result_and_the_service_keeps_serving(
    models: Path, tmp_path: Path
) -> None:
    whole = with_new_uids(CHEST_JPEG, tmp_path / "in")
    data = whole.read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) * 2 // 3])  # the header is whole, the JPEG stream is cut
    with destination() as dest:
        settings = dicom_settings(models, tmp_path / "outbox", dest.url)
        assert settings.dicom_port is not None
        with running_server(settings) as server:
            status = _send_raw(settings.dicom_port, truncated)
            with server.client() as client:
                after = client.post("/predict", files={"file": ("x.dcm", data)})
                outbox = client.get("/v1/dicom/outbox").json()
                samples = metric_samples(client)
    assert status.Status == 0xC000 and str(status.ErrorComment).startswith("corrupt_image")
    assert after.status_code == 200
    assert outbox["counts"] == {**outbox["counts"], "pending": 0, "instances_inferred": 0, "instances_skipped": 0}
    assert sample(samples, "serve_dicom_instances_refused_total", code="corrupt_image") == 1
    assert dest.received == []


def _send_raw(port: int, path: Path) -> pydicom.Dataset:
    """C-STORE the file's bytes as they are (pynetdicom's chunked mode does not parse the data set first)."""
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    ae = AE(ae_title=MODALITY_AE)
    ae.add_requested_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    previous, _config.STORE_SEND_CHUNKED_DATASET = _config.STORE_SEND_CHUNKED_DATASET, True
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title=SCP_AE)
        assert assoc.is_established
        try:
            status = assoc.send_c_store(path)
        finally:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous
    return status


def test_an_accepted_instance_whose_pixels_fail_to_decode_is_recorded_failed(models: Path, tmp_path: Path) -> None:
    small = SAMPLES / "pydicom_dicomdirtests_CR1_6154_16x16_MONOCHROME1.dcm"
    # A whole data set whose header promises more pixels than it holds: screening cannot tell, decoding can.
    broken = with_new_uids(small, tmp_path / "in", BodyPartExamined="CHEST", ViewPosition="PA", Rows=64)
    with destination() as dest:
        settings = dicom_settings(models, tmp_path / "outbox", dest.url)
        with running_server(settings) as server, server.client() as client:
            send(settings, [broken])  # accepted: the C-STORE succeeds

            def done() -> bool:
                counts = client.get("/v1/dicom/outbox").json()["counts"]
                return bool(counts["instances_failed"] == 1 and counts["inbox"] == 0)

            wait_until(done, what="the instance recorded as failed and out of the inbox")
            listing = client.get("/v1/dicom/outbox").json()
            samples = metric_samples(client)
    assert listing["recently_failed"] == [{"sop_instance_uid": broken.stem, "reason": "corrupt_image"}]
    assert listing["counts"]["instances_failed"] == 1 and listing["counts"]["inbox"] == 0
    assert sample(samples, "serve_dicom_instances_refused_total", code="corrupt_image") == 1
    assert dest.received == []


def test_instances_run_on_the_model_dicom_is_routed_to(tmp_path: Path) -> None:
    models = chest_model(tmp_path / "models")  # the default model: chest-test, for chest radiographs only
    build_tiny_model(tmp_path / "models" / "zeta-test" / "0.0.1" / "model.onnx", record_for("zeta-test", "0.0.1"))
    ct = with_new_uids(Path(get_testdata_file("CT_small.dcm")), tmp_path / "in")  # type: ignore[arg-type]
    with destination() as dest:
        settings = dicom_settings(models, tmp_path / "outbox", dest.url, dicom_model="zeta-test/0.0.1")
        with running_server(settings) as server:
            send(settings, [ct])  # outside chest-test's use, inside zeta-test's (it has no restriction)
            wait_until(lambda: len(dest.received) == 1, what="zeta-test's SR")
            with server.client() as client:
                answer = client.post("/v1/models/zeta-test/predict", files={"file": ("x.dcm", ct.read_bytes())})
    (sr,) = dest.datasets()
    top = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}
    assert top["Algorithm Name"].TextValue == "zeta-test" and top["Algorithm Version"].TextValue == "0.0.1"
    expected = {p["label"]: p["probability"] for p in answer.json()["results"][0]["predictions"]}
    assert sr_probabilities(sr) == expected
    unknown = dicom_settings(models, tmp_path / "outbox2", dest.url, dicom_model="no-such-model")
    with pytest.raises(RuntimeError, match="failed to start"), running_server(unknown):
        pass


def test_a_full_inbox_answers_out_of_resources_and_loses_nothing(
    models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = (with_new_uids(CHEST_JPEG, tmp_path / "in") for _ in range(2))
    with destination() as dest:
        settings = dicom_settings(models, tmp_path / "outbox", dest.url, dicom_max_inbox=1)
        assert settings.dicom_port is not None
        with gated_server(monkeypatch, settings, closed=True) as (server, gate):  # the model stays in warm-up
            accepted = _send_raw(settings.dicom_port, first)
            refused = _send_raw(settings.dicom_port, second)
            with server.client() as client:
                assert client.get("/v1/dicom/outbox").json()["counts"]["inbox"] == 1
            gate.open.set()  # warm-up ends: the inbox instance runs on its next retry
            wait_until(lambda: len(dest.received) == 1, what="the first instance's SR")
    assert accepted.Status == 0x0000
    assert refused.Status == 0xA700 and str(refused.ErrorComment).startswith("overloaded")
    assert sr_source_uid(dest.datasets()[0]) == first.stem
