"""Optional API keys on a real server: 401 without, 403 with a wrong key, open route groups, keys never logged."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from service_support import (
    COVID,
    RunningServer,
    metric_samples,
    post_image,
    require_data,
    running_server,
    sample,
    tiny_model,
)
from starlette.datastructures import Headers

from service.auth import ApiKeyConfigError, KeyRing, load_keys, presented_key
from service.config import Settings

KEYS = ("k-first-3b0c9e", "k-second-77a1d2")
IMAGE = COVID / "000001-2.jpg"


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    require_data()
    settings = Settings(model_path=tiny_model(), api_keys=SecretStr(",".join(KEYS)), max_body_bytes=100_000)
    with running_server(settings) as running:
        yield running


def assert_refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert body["request_id"] == response.headers["x-request-id"]


def test_no_key_is_401_and_a_wrong_key_403(server: RunningServer) -> None:
    with server.client() as client:
        missing = post_image(client, IMAGE.read_bytes())
        assert_refused(missing, 401, "unauthorized")
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post("/predict", files={"file": IMAGE.read_bytes()}, headers={"X-API-Key": "k-first"})
        assert_refused(wrong, 403, "forbidden")
        empty_bearer = client.get("/model", headers={"Authorization": "Bearer"})
        assert_refused(empty_bearer, 401, "unauthorized")
        basic = client.get("/model", headers={"Authorization": f"Basic {KEYS[0]}"})
        assert_refused(basic, 401, "unauthorized")


def test_either_header_with_any_configured_key_passes(server: RunningServer) -> None:
    with server.client() as client:
        bearer = client.post(
            "/predict", files={"file": IMAGE.read_bytes()}, headers={"Authorization": f"Bearer {KEYS[1]}"}
        )
        assert bearer.status_code == 200, bearer.text
        api_key = client.get("/model", headers={"X-API-Key": KEYS[0]})
        assert api_key.status_code == 200
        assert api_key.json()["name"] == "tiny-test"


def test_health_and_metrics_stay_open_docs_do_not(server: RunningServer) -> None:
    with server.client() as client:
        assert client.get("/").status_code == 200  # the web page holds no data; its API calls need the key
        assert client.get("/health/live").status_code == 200
        assert client.get("/health/ready").status_code == 200
        assert client.get("/metrics").status_code == 200
        for path in ("/docs", "/redoc", "/openapi.json", "/static/docs/swagger-ui.css", "/no/such/page"):
            assert_refused(client.get(path), 401, "unauthorized")
        assert client.get("/docs", headers={"X-API-Key": KEYS[0]}).status_code == 200


def test_the_body_is_not_read_before_the_key_is_checked(server: RunningServer) -> None:
    oversized = b"\0" * 200_000  # over max_body_bytes: with a key this would be 413
    with server.client() as client:
        assert_refused(client.post("/predict", files={"file": oversized}), 401, "unauthorized")
        with_key = client.post("/predict", files={"file": oversized}, headers={"X-API-Key": KEYS[0]})
        assert with_key.status_code == 413


def test_refusals_are_counted_by_reason_and_route(server: RunningServer) -> None:
    with server.client() as client:
        before = metric_samples(client)
        client.get("/model")
        client.get("/model", headers={"X-API-Key": "nope"})
        after = metric_samples(client)
    for reason in ("unauthorized", "forbidden"):
        assert (
            sample(after, "serve_rejections_total", reason=reason)
            - sample(before, "serve_rejections_total", reason=reason)
            == 1
        )
    counted = sample(after, "serve_requests_total", route="/model", status="401") - sample(
        before, "serve_requests_total", route="/model", status="401"
    )
    assert counted == 1  # the middleware's refusal still gets the route's own label


def test_keys_never_reach_the_logs(server: RunningServer, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG), server.client() as client:
        client.get("/model", headers={"X-API-Key": KEYS[0]})
        client.get("/model", headers={"Authorization": "Bearer wrong-key-5f5f"})
    text = "\n".join(f"{record.getMessage()} {vars(record)}" for record in caplog.records)
    assert "request" in text  # the access lines were captured
    for secret in (*KEYS, "wrong-key-5f5f"):
        assert secret not in text


def test_open_route_groups_are_configurable() -> None:
    settings = Settings(model_path=tiny_model(), api_keys=SecretStr(KEYS[0]), auth_open_routes="docs")
    with running_server(settings, wait_ready=False) as running, running.client() as client:
        assert client.get("/docs").status_code == 200
        assert client.get("/openapi.json").status_code == 200
        assert_refused(client.get("/metrics"), 401, "unauthorized")
        assert_refused(client.get("/health/ready"), 401, "unauthorized")


def test_without_keys_everything_is_open() -> None:
    with running_server(Settings(model_path=tiny_model()), wait_ready=False) as running, running.client() as client:
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/model").status_code in (200, 503)


def test_keys_from_a_file_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# rotated 2026-11\nfile-key-1\n\n  file-key-2  \n", encoding="utf-8")
    monkeypatch.setenv("SERVE_API_KEYS", " env-key , file-key-1,")
    monkeypatch.setenv("SERVE_API_KEYS_FILE", str(key_file))
    monkeypatch.setenv("SERVE_AUTH_OPEN_ROUTES", "health, UI")
    settings = Settings()
    assert settings.auth_open_routes == ("health", "ui")
    assert "env-key" not in repr(settings)
    assert load_keys(settings.api_keys.get_secret_value(), settings.api_keys_file) == (
        "env-key",
        "file-key-1",
        "file-key-2",
    )
    key_file.write_text("# no keys yet\n", encoding="utf-8")
    with pytest.raises(ApiKeyConfigError, match="holds no key"):
        load_keys("", key_file)
    monkeypatch.setenv("SERVE_API_KEYS_FILE", str(tmp_path / "absent.txt"))
    with pytest.raises(ValidationError, match="api_keys_file"):
        Settings()
    monkeypatch.delenv("SERVE_API_KEYS_FILE")
    monkeypatch.setenv("SERVE_AUTH_OPEN_ROUTES", "health,admin")
    with pytest.raises(ValidationError, match="auth_open_routes"):
        Settings()


def test_key_ring_and_header_parsing() -> None:
    ring = KeyRing(KEYS)
    assert len(ring) == 2 and ring
    assert ring.accepts(KEYS[1]) and not ring.accepts(KEYS[1][:-1]) and not ring.accepts("")
    assert not KeyRing(())
    assert presented_key(Headers({"authorization": "bearer abc"})) == "abc"
    assert presented_key(Headers({"authorization": "Token abc", "x-api-key": "xyz"})) == "xyz"
    assert presented_key(Headers({})) is None
