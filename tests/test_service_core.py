"""The serving core on real servers: multi-file and raw bodies, admission before the body, the deadline,
explain heatmaps, multiclass decisions, the fuzz corpus, and the SIGTERM drain of a real process."""

from __future__ import annotations

import base64
import io
import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from service_support import (
    COVID,
    DATA,
    KERMANY,
    RunningServer,
    build_heatmap_model,
    gated_server,
    kermany_images,
    metric_samples,
    record_for,
    reference_probabilities,
    require_data,
    running_server,
    sample,
    service_process,
    tiny_model,
    wait_until,
)

from service.config import Settings

GOOD = COVID / "000001-2.jpg"  # 715 x 645 JPEG
DICOM = DATA / "dicom_samples" / "CR-MONO1-10-chest_MONOCHROME1_no_meta.dcm"
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_heatmap_model(
        root / "cam" / "1.0" / "model.onnx", record_for("cam", "1.0", task="multilabel", labels=("effusion", "mass"))
    )
    labels = ("normal", "bacteria", "virus")
    build_heatmap_model(
        root / "kinds" / "1.0" / "model.onnx", record_for("kinds", "1.0", task="multiclass", labels=labels)
    )
    return root


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[RunningServer]:
    with running_server(Settings(model_dir=model_dir, default_model="cam", max_files=3)) as running:
        yield running


def files(*datas: bytes) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"part{i}.bin", data, "application/octet-stream")) for i, data in enumerate(datas)]


def test_multipart_files_each_get_their_own_result_in_order(server: RunningServer, model_dir: Path) -> None:
    require_data()
    good, other = GOOD.read_bytes(), kermany_images(1)[0].read_bytes()
    with server.client() as client:
        response = client.post("/predict", files=files(good, b"not an image at all", other))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert results[1] == {
        "index": 1,
        "status": 415,
        "error": {"code": "not_an_image", "detail": results[1]["error"]["detail"]},
    }
    for result, data in ((results[0], good), (results[2], other)):
        want = reference_probabilities(model_dir / "cam" / "1.0" / "model.onnx", data)
        got = [p["probability"] for p in result["predictions"]]
        assert got == pytest.approx(want.tolist(), abs=TOLERANCE)
        assert [p["label"] for p in result["predictions"]] == ["effusion", "mass"]
        assert "explanation" not in result


def test_one_failing_image_is_the_response_itself(server: RunningServer) -> None:
    with server.client() as client:
        response = client.post("/predict", files=files(b""))
    assert response.status_code == 400
    assert response.json()["code"] == "empty_file"


def test_too_many_parts_and_missing_parts(server: RunningServer) -> None:
    with server.client() as client:
        response = client.post("/predict", files=files(b"a", b"b", b"c", b"d"))
        assert response.status_code == 413, response.text
        assert response.json()["code"] == "too_many_files"
        response = client.post("/predict", files={"image": ("x", b"a")})
        assert response.status_code == 422
        assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    ("path", "media"), [(GOOD, "image/jpeg"), (COVID / "000001-3.png", "image/png"), (DICOM, "application/dicom")]
)
def test_a_raw_body_with_an_image_content_type(server: RunningServer, model_dir: Path, path: Path, media: str) -> None:
    require_data()
    data = path.read_bytes()
    with server.client() as client:
        response = client.post("/predict", content=data, headers={"content-type": media})
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    want = reference_probabilities(model_dir / "cam" / "1.0" / "model.onnx", data)
    assert [p["probability"] for p in result["predictions"]] == pytest.approx(want.tolist(), abs=TOLERANCE)


@pytest.mark.parametrize("media", ["text/plain", "application/octet-stream", None])
def test_other_content_types_are_415(server: RunningServer, media: str | None) -> None:
    headers = {"content-type": media} if media else {}
    with server.client() as client:
        response = client.post("/predict", content=b"\x89PNG....", headers=headers)
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


def test_multiclass_shows_the_argmax_with_no_threshold(server: RunningServer) -> None:
    require_data()
    with server.client() as client:
        body = client.post("/v1/models/kinds/predict", files=files(*[p.read_bytes() for p in kermany_images(3)])).json()
    assert body["model"]["task"] == "multiclass"
    for result in body["results"]:
        predictions = result["predictions"]
        assert all(p["threshold"] is None for p in predictions)
        probabilities = [p["probability"] for p in predictions]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert [p["positive"] for p in predictions] == [i == int(np.argmax(probabilities)) for i in range(3)]


def decode_png(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def test_explain_returns_heatmap_overlays_over_the_centre_crop(server: RunningServer) -> None:
    require_data()
    data = KERMANY.joinpath("IM-0001-0001.jpeg").read_bytes()  # 1857 x 1317: landscape, so the crop is narrower
    with server.client() as client:
        response = client.post("/predict?explain=true", files=files(data))
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    explanation = result["explanation"]
    width, height = explanation["width"], explanation["height"]
    assert max(width, height) == 512 and width > height
    image = decode_png(explanation["image_png"])
    assert image.size == (width, height)
    assert [h["label"] for h in explanation["heatmaps"]] == ["effusion", "mass"]
    left = (width - height) // 2
    for overlay in explanation["heatmaps"]:
        rgba = np.asarray(decode_png(overlay["png"]))
        assert rgba.shape == (height, width, 4)
        alpha = rgba[..., 3]
        assert (alpha[:, : left - 1] == 0).all() and (alpha[:, left + height + 1 :] == 0).all()
        assert (alpha[:, left + 1 : left + height - 1] > 0).all()
        assert len(np.unique(rgba[:, left + 1 : left + height - 1, :3].reshape(-1, 3), axis=0)) > 8  # a real map


def test_explain_without_a_heatmaps_output_is_422(monkeypatch: pytest.MonkeyPatch) -> None:
    with running_server(Settings(model_path=tiny_model())) as server, server.client() as client:
        response = client.post("/predict?explain=true", files=files(b"never decoded"))
    assert response.status_code == 422
    assert response.json()["code"] == "explain_unavailable"


def test_admission_refuses_before_the_body_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    require_data()
    settings = Settings(model_path=tiny_model(), max_pending=1, max_batch_size=1, max_batch_delay_ms=0)
    with gated_server(monkeypatch, settings) as (server, gate), server.client() as client:
        gate.close()
        with ThreadPoolExecutor(1) as pool:
            held: Future[httpx.Response] = pool.submit(client.post, "/predict", files=files(GOOD.read_bytes()))
            assert gate.entered.wait(30)
            before = metric_samples(client)
            # Not an image: decoding it would answer 415. The 503 shows nothing was decoded.
            refused = httpx.post(server.url + "/predict", files=files(b"not an image"), timeout=10)
            assert refused.status_code == 503, refused.text
            assert refused.json()["code"] == "overloaded"
            assert refused.headers["retry-after"] == "1"
            after = metric_samples(client)
            assert sample(after, "serve_rejections_total", reason="overloaded") == 1
            assert sample(after, "serve_preprocess_seconds_count") == sample(before, "serve_preprocess_seconds_count")
            gate.open.set()
            assert held.result().status_code == 200


def raw_post(url: str, body: bytes, chunk: int = 64 * 1024, *, expect_continue: bool = False) -> bytes:
    """POST `body` as a raw PNG on a fresh socket with Connection: close; everything the server sent back.

    `expect_continue`: send `Expect: 100-continue` and no body (the answer must come without one)."""
    host, port = url.removeprefix("http://").split(":")
    expect = "Expect: 100-continue\r\n" if expect_continue else ""
    head = (
        f"POST /predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n"
        f"{expect}Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        for start in range(0, 0 if expect_continue else len(body), chunk):  # in pieces, as on a real network
            sock.sendall(body[start : start + chunk])
            time.sleep(0.001)
        answer = b""
        while data := sock.recv(65536):
            answer += data
    return answer


def test_a_refused_client_still_sending_its_body_gets_the_503_not_a_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answering before the body is read and closing would make the kernel reset the connection (RST) while
    the client is still sending, and the client would lose the 503: the body is read and dropped first."""
    require_data()
    settings = Settings(model_path=tiny_model(), max_pending=1, max_batch_size=1, max_batch_delay_ms=0)
    body = np.random.default_rng(0).integers(0, 256, 4 * 1024 * 1024, dtype=np.uint8).tobytes()  # 4 MB
    with gated_server(monkeypatch, settings) as (server, gate), server.client() as client:
        gate.close()
        with ThreadPoolExecutor(1) as pool:
            held: Future[httpx.Response] = pool.submit(client.post, "/predict", files=files(GOOD.read_bytes()))
            assert gate.entered.wait(30)
            for _ in range(3):
                answer = raw_post(server.url, body)  # raises ConnectionResetError when the server resets
                head, _, payload = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 503"), head
                assert json.loads(payload)["code"] == "overloaded"
            # A client waiting for `100 Continue` is answered at once, and is not invited to send the body.
            answer = raw_post(server.url, body, expect_continue=True)
            assert answer.startswith(b"HTTP/1.1 503"), answer[:40]  # no "HTTP/1.1 100 Continue" first
            gate.open.set()
            assert held.result().status_code == 200
        assert sample(metric_samples(client), "serve_rejections_total", reason="overloaded") == 4


def test_work_still_queued_at_its_deadline_gets_503(monkeypatch: pytest.MonkeyPatch) -> None:
    require_data()
    settings = Settings(model_path=tiny_model(), deadline_ms=300, max_batch_size=1, max_batch_delay_ms=0)
    with gated_server(monkeypatch, settings) as (server, gate), server.client() as client:
        data = GOOD.read_bytes()
        gate.close()
        with ThreadPoolExecutor(2) as pool:
            held: Future[httpx.Response] = pool.submit(client.post, "/predict", files=files(data))
            assert gate.entered.wait(30)
            started = time.monotonic()
            queued = client.post("/predict", files=files(data))
            waited = time.monotonic() - started
            assert queued.status_code == 503, queued.text
            assert queued.json()["code"] == "deadline_exceeded"
            assert "Retry-After" in queued.headers
            assert waited < 10  # answered at its deadline, not when the worker got free
            time.sleep(0.4)  # the held image is past its deadline too, but a batch holds it: it finishes
            gate.open.set()
            assert held.result().status_code == 200
        assert sample(metric_samples(client), "serve_rejections_total", reason="deadline_exceeded") == 1
        assert client.post("/predict", files=files(data)).status_code == 200


def test_work_that_would_expire_in_the_queue_is_refused_before_it_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    require_data()
    settings = Settings(model_path=tiny_model(), deadline_ms=300, max_batch_size=1, max_batch_delay_ms=0)
    with gated_server(monkeypatch, settings) as (server, gate), server.client() as client:
        data = GOOD.read_bytes()
        gate.close()
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(client.post, "/predict", files=files(data))
            assert gate.entered.wait(30)
            time.sleep(0.6)  # one image that took >= 0.6 s: the worker now expects that per image
            gate.open.set()
            assert slow.result().status_code == 200
            gate.entered.clear()
            gate.close()
            held = pool.submit(client.post, "/predict", files=files(data))
            assert gate.entered.wait(30)
            before = metric_samples(client)
            refused = client.post("/predict", files=files(data))  # 1 image ahead at >= 0.6 s > its 300 ms
            assert refused.status_code == 503 and refused.json()["code"] == "deadline_exceeded", refused.text
            assert (
                "queueing and running the image would take" in refused.json()["detail"]
                and "Retry-After" in refused.headers
            )
            after = metric_samples(client)
            decoded = "serve_preprocess_seconds_count"
            assert sample(after, decoded) == sample(before, decoded)  # refused before its decode
            assert sample(after, "serve_rejections_total", reason="deadline_exceeded") == 1
            gate.open.set()
            assert held.result().status_code == 200


@pytest.mark.parametrize("inline_idle", ["off", "on"])
def test_concurrent_multi_file_requests_are_batched_and_match(model_dir: Path, inline_idle: str) -> None:
    """Answers match the reference whether or not idle-time images run inline on their decode thread; with
    inline runs off, concurrent images share batches (with them on, this tiny model is mostly idle)."""
    require_data()
    images = [p.read_bytes() for p in kermany_images(6)]
    expected = [reference_probabilities(model_dir / "cam" / "1.0" / "model.onnx", d).tolist() for d in images]
    settings = Settings(model_dir=model_dir, default_model="cam", max_files=3, inline_idle=inline_idle)  # type: ignore[arg-type]
    start = threading.Barrier(3)

    def send(chunk: list[bytes]) -> httpx.Response:
        start.wait()
        return httpx.post(running.url + "/predict", files=files(*chunk), timeout=60)

    with running_server(settings) as running, ThreadPoolExecutor(3) as pool:
        responses = list(pool.map(send, [images[0:2], images[2:4], images[4:6]]))
    got = [[p["probability"] for p in r["predictions"]] for resp in responses for r in resp.json()["results"]]
    for g, want in zip(got, expected, strict=True):
        assert g == pytest.approx(want, abs=TOLERANCE)
    if inline_idle == "off":
        assert max(r["batch_size"] for resp in responses for r in resp.json()["results"]) > 1


def test_fuzz_corpus_never_gets_a_5xx(server: RunningServer, shared_data: Path) -> None:
    from fuzz_corpus import fuzz_cases

    cases = fuzz_cases(shared_data, seed=11, count=240)
    with server.client() as client:
        for name, data in cases:
            response = client.post("/predict", files=files(data))
            assert response.status_code < 500, (name, response.text)
            if response.status_code != 200:
                assert set(response.json()) >= {"code", "detail", "request_id"}, name
        # A few hostile parts beside a good one in one request: each fails alone.
        mixed = client.post("/predict", files=files(cases[0][1], GOOD.read_bytes(), cases[1][1]))
        assert mixed.status_code == 200
        assert "predictions" in mixed.json()["results"][1]
        assert client.post("/predict", files=files(GOOD.read_bytes())).status_code == 200


def test_sigterm_drains_admitted_work_then_exits(model_dir: Path) -> None:
    require_data()
    images = [p.read_bytes() for p in kermany_images(8)]
    env = {"SERVE_MODEL_DIR": str(model_dir), "SERVE_DEFAULT_MODEL": "cam", "SERVE_DEADLINE_MS": "120000"}
    env |= {"SERVE_MAX_FILES": "8", "SERVE_DECODE_THREADS": "1", "SERVE_DRAIN_TIMEOUT_S": "60"}
    with service_process(env) as running, ThreadPoolExecutor(6) as pool:

        def send(_: int) -> httpx.Response:
            return httpx.post(running.url + "/predict", files=files(*images), timeout=120)

        admitted = [pool.submit(send, i) for i in range(6)]
        with running.client() as client:
            wait_until(lambda: sample(metric_samples(client), "serve_in_flight") >= 3, what="requests in flight")
            running.process.send_signal(signal.SIGTERM)
            wait_until(lambda: client.get("/health/ready").status_code == 503, what="readiness to turn false")
            late = client.post("/predict", files=files(images[0]))
            assert late.status_code == 503, late.text
            assert late.json()["code"] == "shutting_down"
        responses = [future.result() for future in admitted]
        served = [r for r in responses if r.status_code == 200]
        # At least the 3 seen in flight at SIGTERM were finished in full; any not yet admitted were turned away.
        assert len(served) >= 3
        for response in served:
            assert [r.get("status") for r in response.json()["results"]] == [None] * len(images)
        for response in responses:
            assert response.status_code == 200 or response.json()["code"] == "shutting_down"
        assert running.process.wait(60) in (0, -signal.SIGTERM)


def test_intended_use_gate_refuses_other_modalities_and_can_be_turned_off(tmp_path: Path) -> None:
    require_data()
    record = record_for("dx-only", "1.0", intended_use={"modalities": ["DX"]})
    path = build_heatmap_model(tmp_path / "dx-only" / "1.0" / "model.onnx", record)
    data = DICOM.read_bytes()  # Modality CR
    with running_server(Settings(model_path=path)) as server, server.client() as client:
        response = client.post("/predict", content=data, headers={"content-type": "application/dicom"})
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "outside_intended_use"
    with running_server(Settings(model_path=path, intended_use_gate=False)) as server, server.client() as client:
        response = client.post("/predict", content=data, headers={"content-type": "application/dicom"})
        assert response.status_code == 200, response.text
