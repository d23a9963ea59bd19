"""An exception injected into one batch (SERVE_FAULT_INJECT_BATCH, test only) on a real `python -m service`.

Only that batch's requests fail, each with a JSON 500 `inference_failed` carrying its own request id; the
batches before and after it are answered correctly, and the process stays up and ready.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from service_support import ServiceProcess, kermany_images, reference_probabilities, service_process, tiny_model

from service.config import Settings

FAILED_BATCH = re.compile(r"a batch of (\d+) images failed")


def _post(server: ServiceProcess, image: bytes, request_id: str) -> httpx.Response:
    with server.client() as client:
        return client.post(
            "/predict", files={"file": ("x.jpeg", image, "image/jpeg")}, headers={"X-Request-ID": request_id}
        )


def _assert_correct(response: httpx.Response, expected: np.ndarray) -> None:
    assert response.status_code == 200, response.text
    got = [p["probability"] for p in response.json()["results"][0]["predictions"]]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def _assert_injected_500(response: httpx.Response, request_id: str) -> None:
    assert response.status_code == 500, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"] == request_id
    body = response.json()
    assert body["code"] == "inference_failed", body
    assert body["request_id"] == request_id, body
    assert "injected fault" in body["detail"], body


def _failed_batch_sizes(server: ServiceProcess) -> list[int]:
    return [int(m.group(1)) for line in list(server.lines) if (m := FAILED_BATCH.search(line))]


def test_fault_injection_is_off_by_default() -> None:
    assert Settings().fault_inject_batch is None


def test_one_sequential_batch_fails_alone() -> None:
    """Requests one after another are one batch each: only the second gets the 500."""
    image = kermany_images(1)[0].read_bytes()
    expected = reference_probabilities(tiny_model(), image)
    env = {"SERVE_MODEL_PATH": str(tiny_model()), "SERVE_FAULT_INJECT_BATCH": "2"}
    with service_process(env) as server:
        _assert_correct(_post(server, image, "before-0001"), expected)
        _assert_injected_500(_post(server, image, "injected-0002"), "injected-0002")
        for i in range(3):
            _assert_correct(_post(server, image, f"after-{i:04d}"), expected)
        with server.client() as client:
            assert client.get("/health/ready").status_code == 200
        assert _failed_batch_sizes(server) == [1]
        assert server.process.poll() is None


def test_concurrent_requests_fail_only_with_their_batch() -> None:
    """Concurrent requests share batches: exactly the failed batch's members get 500s, every other one a 200."""
    image = kermany_images(1)[0].read_bytes()
    expected = reference_probabilities(tiny_model(), image)
    env = {
        "SERVE_MODEL_PATH": str(tiny_model()),
        "SERVE_FAULT_INJECT_BATCH": "2",
        "SERVE_MAX_BATCH_SIZE": "4",
        "SERVE_MAX_BATCH_DELAY_MS": "200",
    }
    with service_process(env) as server:
        _assert_correct(_post(server, image, "warm-0000"), expected)  # batch 1
        ids = [f"concurrent-{i:04d}" for i in range(8)]
        with ThreadPoolExecutor(len(ids)) as pool:
            responses = list(pool.map(lambda rid: _post(server, image, rid), ids))
        failed = [(rid, r) for rid, r in zip(ids, responses, strict=True) if r.status_code != 200]
        for rid, response in failed:
            _assert_injected_500(response, rid)
        for response in responses:
            if response.status_code == 200:
                _assert_correct(response, expected)
        (batch_size,) = _failed_batch_sizes(server)
        assert len(failed) == batch_size >= 1, [r.status_code for r in responses]
        assert len(failed) < len(ids)  # the batches after it were served
        _assert_correct(_post(server, image, "after-0000"), expected)
