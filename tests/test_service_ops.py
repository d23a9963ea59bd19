"""Health probes, /model, /metrics and the OpenAPI document, on a real server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from service_support import (
    COVID,
    TINY_RECORD,
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

from service.app import create_app
from service.config import Settings
from service.metrics import BATCH_SIZE_BUCKETS


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with running_server(Settings(model_path=tiny_model())) as running:
        yield running


def test_ready_only_after_warm_up(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(model_path=tiny_model())
    with gated_server(monkeypatch, settings, closed=True) as (server, gate), server.client() as client:
        assert gate.entered.wait(30), "warm-up never started"
        assert client.get("/health/live").json() == {"status": "alive"}
        before = client.get("/health/ready")
        assert before.status_code == 503
        body = before.json()
        assert body.pop("request_id") == before.headers["x-request-id"]
        assert body == {"code": "not_ready", "detail": "the model is not ready: warming up"}
        gate.open.set()
        wait_until(lambda: client.get("/health/ready").status_code == 200, what="readiness")
        assert client.get("/health/ready").json() == {"status": "ready"}


def test_a_failed_warm_up_fails_both_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(model_path=tiny_model())
    with gated_server(monkeypatch, settings, closed=True) as (server, gate), server.client() as client:
        gate.fail_next = True
        gate.open.set()
        wait_until(lambda: client.get("/health/live").status_code == 503, what="the worker to stop")
        assert "warm-up failed: injected failure" in client.get("/health/live").json()["detail"]
        assert client.get("/health/ready").status_code == 503


def test_model_endpoint_returns_the_record(server: RunningServer) -> None:
    with server.client() as client:
        record = client.get("/model").json()
    for field in ("name", "version", "task", "thresholds"):
        assert record[field] == TINY_RECORD[field]
    assert record["labels"] == ["pneumonia"]
    assert record["preprocessing"] == {**TINY_RECORD["preprocessing"], "mean": [0.5], "std": [0.25]}
    assert record["provenance"]["architecture"] == "tiny-test"


def test_metrics_count_requests_by_route_and_status(server: RunningServer) -> None:
    require_data()
    with server.client() as client:
        before = metric_samples(client)
        assert post_image(client, (COVID / "000001-2.jpg").read_bytes()).status_code == 200
        assert post_image(client, b"plain text").status_code == 415
        client.get("/no/such/page")
        after = metric_samples(client)

    def delta(metric: str, /, **labels: str) -> float:
        return sample(after, metric, **labels) - sample(before, metric, **labels)

    assert delta("serve_requests_total", route="/predict", status="200") == 1
    assert delta("serve_requests_total", route="/predict", status="415") == 1
    assert delta("serve_requests_total", route="unmatched", status="404") == 1
    assert delta("serve_request_latency_seconds_count", route="/predict") == 2
    assert delta("serve_preprocess_seconds_count") == 1
    assert delta("serve_queue_wait_seconds_count") == 1
    assert delta("serve_inference_seconds_count", name="tiny-test", version="0.0.1") == 1
    assert delta("serve_batch_size_count") == 1
    buckets = {dict(labels)["le"] for name, labels in after if name == "serve_batch_size_bucket"}
    assert buckets == {str(float(bound)) for bound in BATCH_SIZE_BUCKETS} | {"+Inf"}
    assert sample(after, "serve_queue_depth") == 0
    info = {"name": "tiny-test", "version": "0.0.1", "provider": "CPUExecutionProvider", "variant": "fp32"}
    assert sample(after, "serve_model_info", **info) == 1


def test_openapi_documents_predict_and_its_errors(server: RunningServer) -> None:
    with server.client() as client:
        spec = client.get("/openapi.json").json()
    predict = spec["paths"]["/predict"]["post"]
    assert set(predict["responses"]) >= {"200", "400", "413", "415", "422", "500", "503"}
    assert predict["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictResponse")
    assert predict["responses"]["415"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    schemas = spec["components"]["schemas"]
    assert set(schemas["PredictResponse"]["properties"]) == {"model", "results"}
    assert set(schemas["ImageResult"]["properties"]) == {
        "index",
        "predictions",
        "batch_size",
        "timings_ms",
        "ood_score",
        "out_of_distribution",
        "warning",
        "explanation",
    }
    assert set(schemas["ImageFailure"]["properties"]) == {"index", "status", "error"}
    body = predict["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "image/png", "image/jpeg", "image/tiff", "application/dicom"}
    assert set(schemas["LabelPrediction"]["properties"]) == {"label", "probability", "threshold", "positive"}
    assert {"/model", "/health/live", "/health/ready", "/metrics"} <= set(spec["paths"])


def test_apps_in_one_process_keep_separate_metrics() -> None:
    settings = Settings(model_path=tiny_model())
    first, second = create_app(settings), create_app(settings)
    assert first.state.metrics.registry is not second.state.metrics.registry
