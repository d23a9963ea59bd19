"""Bad input, overload and failing batches: JSON errors with stable codes, and the server keeps serving."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from service_support import (
    COVID,
    DATA,
    KERMANY,
    RGBA_PNG,
    RunningServer,
    gated_server,
    metric_samples,
    post_image,
    require_data,
    running_server,
    sample,
    tiny_model,
    wait_until,
)

from service.config import Settings

BODY_LIMIT = 1024 * 1024
PIXEL_LIMIT = 1_000_000
GOOD_IMAGE = COVID / "000001-2.jpg"  # 715 x 645 JPEG, 53 kB: under both limits
OTHER_GOOD_IMAGE = COVID / "000001-12.jpg"  # 373 x 361 JPEG, 80 kB: a second image, scored differently
MANY_PIXELS = KERMANY / "IM-0001-0001.jpeg"  # 1857 x 1317 = 2.4 M pixels, 253 kB
BIG_FILE = KERMANY / "NORMAL2-IM-1018-0001.jpeg"  # 2.3 MB: over the body limit


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    require_data()
    settings = Settings(model_path=tiny_model(), max_body_bytes=BODY_LIMIT, max_image_pixels=PIXEL_LIMIT)
    with running_server(settings) as running:
        yield running


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"code", "detail", "request_id"}
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["code"] == code
    assert body["detail"]


def assert_still_serving(client: httpx.Client) -> None:
    response = post_image(client, GOOD_IMAGE.read_bytes())
    assert response.status_code == 200, response.text


def truncated(path: Path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


BAD_UPLOADS = {
    "empty-file": (lambda: b"", "empty.jpg", 400, "empty_file"),
    "text-file": (lambda: b"Patient notes: nothing to see here.\n", "notes.txt", 415, "not_an_image"),
    "csv-named-jpg": (
        lambda: (DATA / "kermany_chest_xray_subset" / "labels.csv").read_bytes()[:4096],
        "xray.jpg",
        415,
        "not_an_image",
    ),
    "truncated-jpeg": (lambda: truncated(GOOD_IMAGE), "cut.jpg", 400, "corrupt_image"),
    "truncated-png": (lambda: truncated(RGBA_PNG), "cut.png", 400, "corrupt_image"),
    "too-many-pixels": (lambda: MANY_PIXELS.read_bytes(), "big.jpeg", 413, "image_too_large"),
    "body-over-limit": (lambda: BIG_FILE.read_bytes(), "huge.jpeg", 413, "body_too_large"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_gets_its_error_and_the_server_keeps_serving(server: RunningServer, case: str) -> None:
    read, filename, status, code = BAD_UPLOADS[case]
    with server.client() as client:
        assert_error(post_image(client, read(), filename=filename), status, code)
        assert_still_serving(client)


def test_streamed_body_over_limit_is_cut_off_without_content_length(server: RunningServer) -> None:
    data = BIG_FILE.read_bytes()

    def chunks() -> Iterator[bytes]:
        yield b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'
        for start in range(0, len(data), 64 * 1024):
            yield data[start : start + 64 * 1024]
        yield b"\r\n--b0undary--\r\n"

    headers = {"content-type": "multipart/form-data; boundary=b0undary"}
    with server.client() as client:
        response = client.post("/predict", content=chunks(), headers=headers)
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "body_too_large")
        assert_still_serving(client)


def test_missing_file_field_is_a_validation_error(server: RunningServer) -> None:
    with server.client() as client:
        response = client.post("/predict", files={"image": ("x.jpg", GOOD_IMAGE.read_bytes())})
        assert_error(response, 422, "validation_error")
        assert "file" in response.json()["detail"]
        assert_error(client.post("/predict"), 415, "unsupported_media_type")  # no body, no Content-Type
        assert_still_serving(client)


def test_unknown_route_and_wrong_method_are_json_too(server: RunningServer) -> None:
    with server.client() as client:
        assert_error(client.get("/nowhere"), 404, "not_found")
        assert_error(client.get("/predict"), 405, "method_not_allowed")


def test_queue_full_answers_503_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    require_data()
    settings = Settings(model_path=tiny_model(), max_batch_size=1, max_batch_delay_ms=0, queue_limit=1)
    with gated_server(monkeypatch, settings) as (server, gate), server.client() as client:
        data = GOOD_IMAGE.read_bytes()
        gate.close()
        with ThreadPoolExecutor(2) as pool:
            held: Future[httpx.Response] = pool.submit(post_image, client, data)
            assert gate.entered.wait(30), "the worker never took the first image"
            queued: Future[httpx.Response] = pool.submit(post_image, client, data)
            wait_until(lambda: sample(metric_samples(client), "serve_queue_depth") == 1, what="a queued image")

            refused = post_image(client, data)
            assert_error(refused, 503, "queue_full")
            assert refused.headers["retry-after"] == "1"

            gate.open.set()
            assert held.result().status_code == 200
            assert queued.result().status_code == 200
        assert_still_serving(client)


def test_a_failing_batch_answers_500_and_the_worker_lives_on(monkeypatch: pytest.MonkeyPatch) -> None:
    require_data()
    settings = Settings(model_path=tiny_model(), max_batch_size=1, max_batch_delay_ms=0)
    with gated_server(monkeypatch, settings) as (server, gate), server.client() as client:
        gate.fail_next = True
        assert_error(post_image(client, GOOD_IMAGE.read_bytes()), 500, "inference_failed")
        assert_still_serving(client)
        assert client.get("/health/live").status_code == 200


def test_requests_during_warm_up_get_503_not_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    require_data()
    settings = Settings(model_path=tiny_model())
    with gated_server(monkeypatch, settings, closed=True) as (server, gate), server.client() as client:
        assert gate.entered.wait(30), "warm-up never started"
        response = post_image(client, GOOD_IMAGE.read_bytes())
        assert_error(response, 503, "not_ready")
        assert "Retry-After" in response.headers
        gate.open.set()
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="readiness")
        assert_still_serving(client)


def test_concurrent_bad_and_good_uploads_each_get_their_own_answer(server: RunningServer) -> None:
    # Two different good images among bad ones, sent at once: each must get its own result, the one a single-image
    # call gives it (a swap, or one image's answer given to both, fails), and each bad one its own error.
    goods = [GOOD_IMAGE.read_bytes(), OTHER_GOOD_IMAGE.read_bytes()]
    uploads = [(goods[0], 200), (b"", 400), (b"not an image", 415), (goods[1], 200), (goods[0], 200)]
    start = threading.Barrier(len(uploads))
    with server.client() as client:
        alone = {data: post_image(client, data).json()["results"][0]["predictions"] for data in goods}
        assert alone[goods[0]] != alone[goods[1]], "the two good images must score differently to tell them apart"

        def send(data: bytes) -> httpx.Response:
            start.wait()
            return post_image(client, data)

        with ThreadPoolExecutor(len(uploads)) as pool:
            answers = list(pool.map(send, [data for data, _ in uploads]))
    assert [answer.status_code for answer in answers] == [status for _, status in uploads]
    for (data, status), answer in zip(uploads, answers, strict=True):
        if status == 200:
            predictions = answer.json()["results"][0]["predictions"]
            for got, single in zip(predictions, alone[data], strict=True):
                assert got["label"] == single["label"] and got["positive"] == single["positive"]
                # Batched or alone, the same model on the same pixels: equal to float32 rounding.
                assert got["probability"] == pytest.approx(single["probability"], abs=1e-5)


def test_upload_names_and_contents_never_reach_the_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    canary = "PATIENT-Jane-Doe-19700101"
    caplog.set_level(logging.DEBUG)
    settings = Settings(model_path=tiny_model(), max_batch_size=1, max_batch_delay_ms=0)
    with gated_server(monkeypatch, settings) as (server, gate), server.client() as client:
        gate.fail_next = True
        assert post_image(client, GOOD_IMAGE.read_bytes(), filename=f"{canary}.jpg").status_code == 500
        rejected = post_image(client, canary.encode(), filename=f"{canary}.txt")
        assert rejected.status_code == 415
        assert canary not in rejected.text
        assert post_image(client, GOOD_IMAGE.read_bytes(), filename=f"{canary}.jpg").status_code == 200
    assert "a batch of 1 images failed" in caplog.text  # the failure was logged, with its traceback
    assert canary not in caplog.text
