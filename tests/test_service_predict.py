"""POST /predict on a real uvicorn server with a real ONNX model and real X-ray files."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from service_support import (
    COVID,
    DATA,
    PNG_NAMED_JPG,
    RGBA_PNG,
    TINY_RECORD,
    RunningServer,
    kermany_images,
    metric_samples,
    post_image,
    reference_probabilities,
    require_data,
    running_server,
    sample,
    tiny_model,
)

from medcore.decision import decide
from medcore.record import ModelRecord
from service.config import Settings

TOLERANCE = 1e-5  # batched vs single-image onnxruntime on the same float32 input
CONCURRENCY = 16


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    # A long batch window so that concurrent requests reliably meet in one batch; no inline runs on an idle
    # model (the CPU default), which would serve this fast model's images mostly one by one.
    settings = Settings(model_path=tiny_model(), max_batch_size=16, max_batch_delay_ms=50, inline_idle="off")
    with running_server(settings) as running:
        yield running


def distinct_images() -> list[Path]:
    """Full-resolution Kermany JPEGs plus PNG-in-.jpg and RGBA files from the COVID set."""
    others = [PNG_NAMED_JPG, RGBA_PNG, COVID / "000001-2.jpg", COVID / "00cfd1c1.jpg"]
    return kermany_images(CONCURRENCY - len(others)) + others


def test_concurrent_requests_are_batched_and_each_answer_is_its_own(server: RunningServer) -> None:
    images = [path.read_bytes() for path in distinct_images()]
    expected = [float(reference_probabilities(tiny_model(), data)[0]) for data in images]
    # Distinct expected answers, so that a mix-up between requests could not pass unnoticed.
    gaps = [abs(a - b) for a, b in itertools.combinations(expected, 2)]
    assert min(gaps) > 10 * TOLERANCE

    start = threading.Barrier(len(images))
    with server.client(limits=httpx.Limits(max_connections=CONCURRENCY)) as client:
        before = metric_samples(client)

        def send(data: bytes) -> httpx.Response:
            start.wait()
            return post_image(client, data)

        with ThreadPoolExecutor(len(images)) as pool:
            responses = list(pool.map(send, images))
        after = metric_samples(client)

    assert [r.status_code for r in responses] == [200] * len(images)
    bodies = [r.json() for r in responses]
    results = [body["results"][0] for body in bodies]
    for result, want in zip(results, expected, strict=True):
        assert result["predictions"][0]["probability"] == pytest.approx(want, abs=TOLERANCE)
    assert max(result["batch_size"] for result in results) > 1

    def batches_over_one(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
        return sample(samples, "serve_batch_size_count") - sample(samples, "serve_batch_size_bucket", le="1.0")

    assert batches_over_one(after) - batches_over_one(before) >= 1
    served = sample(after, "serve_batch_size_sum") - sample(before, "serve_batch_size_sum")
    assert served == len(images)


def test_response_carries_model_decisions_and_timings(server: RunningServer) -> None:
    data = kermany_images(1)[0].read_bytes()
    with server.client() as client:
        body = post_image(client, data, filename="patient-name.jpeg").json()
    record = ModelRecord.model_validate(TINY_RECORD)
    assert body["model"] == {
        "name": record.name,
        "version": record.version,
        "task": record.task.value,
        "variant": "fp32",
        "provider": "CPUExecutionProvider",
    }
    (result,) = body["results"]
    assert result["index"] == 0
    probability = reference_probabilities(tiny_model(), data)
    ((decision,),) = decide(probability[None, :], record)
    (prediction,) = result["predictions"]
    assert prediction["label"] == "pneumonia"
    assert prediction["threshold"] == 0.5
    assert prediction["probability"] == pytest.approx(decision.probability, abs=TOLERANCE)
    assert prediction["positive"] is decision.positive
    assert result["batch_size"] >= 1
    timings = result["timings_ms"]
    assert set(timings) == {"preprocess", "queue", "inference", "total"}
    assert all(value >= 0 for value in timings.values())
    assert timings["total"] >= timings["preprocess"]


@pytest.mark.parametrize(
    "path",
    [PNG_NAMED_JPG, RGBA_PNG, DATA / "dicom_samples" / "CR-MONO1-10-chest_MONOCHROME1_no_meta.dcm"],
    ids=["png-bytes-named-jpg", "rgba-png", "dicom-monochrome1"],
)
def test_images_are_decoded_by_content(server: RunningServer, path: Path) -> None:
    require_data()
    data = path.read_bytes()
    with server.client() as client:
        response = post_image(client, data, filename="upload.bin")
    assert response.status_code == 200, response.text
    probability = response.json()["results"][0]["predictions"][0]["probability"]
    assert probability == pytest.approx(float(reference_probabilities(tiny_model(), data)[0]), abs=TOLERANCE)
