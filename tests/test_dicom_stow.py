"""STOW-RS in (`POST /dicomweb/studies`) and out (results to Orthanc's DICOMweb), with the PS3.18 response."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pydicom
import pytest
from dicom_support import (
    CHEST_J2K,
    CHEST_JPEG,
    MODEL_NAME,
    TIBIA,
    chest_model,
    destination,
    dicom_settings,
    require_samples,
    sr_probabilities,
    sr_source_uid,
    with_new_uids,
)
from orthanc_support import OrthancServer, orthanc, orthanc_factory
from service_support import metric_samples, running_server, sample, wait_until

from service.dicom.stow import encode_related

__all__ = ["orthanc", "orthanc_factory"]

REFERENCED, FAILED, REASON, UID = "00081199", "00081198", "00081197", "00081155"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_samples()
    return chest_model(tmp_path_factory.mktemp("models"))


def stow(client: httpx.Client, parts: list[bytes], path: str = "/dicomweb/studies", **headers: str) -> httpx.Response:
    content_type, body = encode_related(parts)
    return client.post(path, content=body, headers={"Content-Type": content_type, **headers})


def uids(response: httpx.Response, sequence: str) -> list[str]:
    return [item[UID]["Value"][0] for item in response.json().get(sequence, {}).get("Value", [])]


def test_stow_in_and_stow_out_to_orthanc_with_the_ps318_response(
    models: Path, orthanc: OrthancServer, tmp_path: Path
) -> None:
    chest, chest_j2k, tibia = (with_new_uids(f, tmp_path / "in") for f in (CHEST_JPEG, CHEST_J2K, TIBIA))
    data = chest.read_bytes()
    truncated = with_new_uids(CHEST_JPEG, tmp_path / "cut").read_bytes()
    truncated = truncated[: len(truncated) * 2 // 3]
    settings = dicom_settings(models, tmp_path / "outbox", orthanc.dicomweb_url, dicom_port=None)
    with running_server(settings) as server, server.client() as client:
        answer = stow(client, [data, chest_j2k.read_bytes(), tibia.read_bytes(), truncated])
        orthanc.wait_for_instances(2, modality="SR")
        predicted = client.post(f"/v1/models/{MODEL_NAME}/predict", files={"file": ("x.dcm", data)}).json()
        again = stow(client, [data])  # the same instance again: referenced, not run again
        samples = metric_samples(client)
    assert answer.status_code == 202, answer.text  # some parts skipped or failed
    assert answer.headers["content-type"].startswith("application/dicom+json")
    assert uids(answer, REFERENCED) == [chest.stem, chest_j2k.stem, tibia.stem]
    (failed,) = answer.json()[FAILED]["Value"]
    assert failed[REASON]["Value"] == [0xC000]
    warnings = answer.headers.get_list("warning")
    assert warnings == [
        '299 medimaging "part 3: skipped (outside_intended_use)"',
        '299 medimaging "part 4: refused (corrupt_image)"',
    ]
    assert again.status_code == 200 and uids(again, REFERENCED) == [chest.stem]
    srs = [pydicom.dcmread(io.BytesIO(orthanc.instance_file(i))) for i in orthanc.instances_of_modality("SR")]
    assert sorted(sr_source_uid(sr) for sr in srs) == sorted([chest.stem, chest_j2k.stem])
    (chest_sr,) = [sr for sr in srs if sr_source_uid(sr) == chest.stem]
    assert chest_sr.StudyInstanceUID == pydicom.dcmread(chest, stop_before_pixels=True).StudyInstanceUID
    expected = {p["label"]: p["probability"] for p in predicted["results"][0]["predictions"]}
    assert sr_probabilities(chest_sr) == expected
    assert sample(samples, "serve_dicom_instances_received_total", via="dicomweb") == 5
    assert sample(samples, "serve_dicom_results_sent_total") == 2


def test_stow_bodies_that_are_not_dicom_multiparts_are_4xx_naming_the_part(models: Path, tmp_path: Path) -> None:
    good = with_new_uids(CHEST_JPEG, tmp_path / "in").read_bytes()
    with destination() as dest:
        settings = dicom_settings(models, tmp_path / "outbox", dest.url, dicom_port=None)
        with running_server(settings) as server, server.client() as client:
            content_type, body = encode_related([good, b"just some text, not DICOM"])
            not_dicom = client.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})
            typed = body.replace(
                b"Content-Type: application/dicom\r\n\r\njust", b"Content-Type: text/plain\r\n\r\njust"
            )
            text_part = client.post("/dicomweb/studies", content=typed, headers={"Content-Type": content_type})
            no_boundary = client.post(
                "/dicomweb/studies",
                content=body,
                headers={"Content-Type": 'multipart/related; type="application/dicom"'},
            )
            wrong_boundary = client.post(
                "/dicomweb/studies", content=body, headers={"Content-Type": content_type.replace("medimaging", "other")}
            )
            cut = client.post(
                "/dicomweb/studies", content=body[: len(body) // 2], headers={"Content-Type": content_type}
            )
            form = client.post("/dicomweb/studies", files={"file": ("x.dcm", good)})
            raw = client.post("/dicomweb/studies", content=good, headers={"Content-Type": "application/dicom"})
            samples = metric_samples(client)
    assert (not_dicom.status_code, not_dicom.json()["code"]) == (400, "not_dicom")
    assert "part 2" in not_dicom.json()["detail"]
    assert (text_part.status_code, text_part.json()["code"]) == (415, "unsupported_media_type")
    assert "part 2" in text_part.json()["detail"] and "text/plain" in text_part.json()["detail"]
    assert (no_boundary.status_code, no_boundary.json()["code"]) == (400, "bad_multipart")
    assert wrong_boundary.status_code == 400 and "boundary" in wrong_boundary.json()["detail"]
    assert cut.status_code == 400 and "part 1" in cut.json()["detail"]
    assert form.status_code == 415 and raw.status_code == 415
    assert sample(samples, "serve_dicom_instances_received_total", via="dicomweb") == 0  # nothing ran
    assert dest.received == []


def test_stow_into_a_study_refuses_instances_of_another_and_needs_the_api_key(models: Path, tmp_path: Path) -> None:
    chest = with_new_uids(CHEST_JPEG, tmp_path / "in")
    study = str(pydicom.dcmread(chest, stop_before_pixels=True).StudyInstanceUID)
    with destination() as dest:
        settings = dicom_settings(models, tmp_path / "outbox", dest.url, dicom_port=None, api_keys="k1")
        with running_server(settings) as server, server.client() as client:
            anonymous = stow(client, [chest.read_bytes()])
            other = stow(client, [chest.read_bytes()], "/dicomweb/studies/1.2.3.4", Authorization="Bearer k1")
            listing_anonymous = client.get("/v1/dicom/outbox")
            right = stow(client, [chest.read_bytes()], f"/dicomweb/studies/{study}", Authorization="Bearer k1")
            wait_until(lambda: len(dest.received) == 1, what="the SR")
            listing = client.get("/v1/dicom/outbox", headers={"X-API-Key": "k1"})
    assert anonymous.status_code == 401 and listing_anonymous.status_code == 401
    assert other.status_code == 409 and other.json()[FAILED]["Value"][0][REASON]["Value"] == [0xA900]
    assert right.status_code == 200 and uids(right, REFERENCED) == [chest.stem]
    assert listing.status_code == 200 and listing.json()["counts"]["instances_inferred"] == 1


def test_the_dicomweb_routes_say_when_the_node_is_off(tmp_path: Path, models: Path) -> None:
    settings = dicom_settings(models, tmp_path / "outbox", "dicom://X@127.0.0.1:1", dicom_port=None)
    settings = settings.model_copy(update={"dicom_destination": None})
    with running_server(settings) as server, server.client() as client:
        answer = stow(client, [with_new_uids(CHEST_JPEG, tmp_path / "in").read_bytes()])
        listing = client.get("/v1/dicom/outbox")
    assert (answer.status_code, answer.json()["code"]) == (404, "dicom_disabled")
    assert listing.status_code == 404 and "SERVE_DICOM_DESTINATION" in listing.json()["detail"]


def test_the_sr_carries_the_models_out_of_distribution_check_as_predict_does(tmp_path: Path) -> None:
    """The bundled model has the in-graph `ood_score`: its score and flag reach the SR, equal to /predict's."""
    from service.config import BUNDLED_MODEL

    chest = with_new_uids(CHEST_JPEG, tmp_path / "in")
    with destination() as dest:
        settings = dicom_settings(tmp_path, tmp_path / "outbox", dest.url, dicom_port=None, model_path=BUNDLED_MODEL)
        with running_server(settings) as server, server.client() as client:
            answer = stow(client, [chest.read_bytes()])
            predicted = client.post("/predict", files={"file": ("x.dcm", chest.read_bytes())}).json()["results"][0]
            wait_until(lambda: len(dest.received) == 1, what="the SR")
    assert answer.status_code == 200, answer.text
    (sr,) = dest.datasets()
    top = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}
    score = top["Out-of-distribution score"].MeasuredValueSequence[0].FloatingPointValue
    assert predicted["ood_score"] is not None and float(score) == predicted["ood_score"]
    flag = top["Outside training distribution"].ConceptCodeSequence[0].CodeMeaning
    assert flag == ("Yes" if predicted["out_of_distribution"] else "No")
    assert ("Out-of-distribution warning" in top) == bool(predicted["out_of_distribution"])
    expected = {p["label"]: p["probability"] for p in predicted["predictions"]}
    assert sr_probabilities(sr) == expected
