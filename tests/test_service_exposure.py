"""Open by default, safely: the start-up warning, key rotation without a restart, and the CORS policy.

Each runs the real server: `python -m service` in a subprocess (signals, the key file watch, its log lines) or
uvicorn in a thread (CORS).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from service_support import running_server, service_process, tiny_model, wait_until

from service.app import create_app
from service.auth import is_loopback
from service.config import Settings

ORIGIN = "https://pacs.example.org"


def status_with(client: httpx.Client, key: str) -> int:
    return client.get("/v1/models", headers={"X-API-Key": key}).status_code


def write_keys(path: Path, *keys: str) -> None:
    """Replace the key file the way a Kubernetes Secret volume does: a new file renamed over the old one."""
    fresh = path.with_suffix(".new")
    fresh.write_text("# rotated\n" + "".join(f"{key}\n" for key in keys), encoding="utf-8")
    os.replace(fresh, path)


@pytest.mark.parametrize(
    ("host", "keys", "warned"),
    [
        ("0.0.0.0", "", True),
        ("::", "", True),
        ("10.1.2.3", "", True),
        ("127.0.0.1", "", False),
        ("::1", "", False),
        ("localhost", "", False),
        ("0.0.0.0", "a-key", False),
    ],
)
def test_warning_when_listening_beyond_loopback_without_keys(
    host: str, keys: str, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="service.auth"):
        create_app(Settings(model_path=tiny_model(), host=host, api_keys=SecretStr(keys)))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(warnings) is warned, warnings
    if warned:
        assert host in warnings[0] and "SERVE_API_KEYS_FILE" in warnings[0]


def test_the_entry_point_logs_the_warning_on_stderr() -> None:
    # --check builds the app as the server does, without opening the port.
    clean = {name: value for name, value in os.environ.items() if not name.startswith("SERVE_")}
    env = {**clean, "SERVE_MODEL_PATH": str(tiny_model()), "SERVE_HOST": "0.0.0.0"}
    result = subprocess.run(
        [sys.executable, "-m", "service", "--check"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    warning = json.loads(next(line for line in result.stderr.splitlines() if "no API keys" in line))
    assert warning["level"] == "warning" and "0.0.0.0" in warning["message"]


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.5") and is_loopback("::1") and not is_loopback("example.org")


def test_keys_rotate_on_sighup_without_a_restart(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    write_keys(key_file, "old-key-1")
    env = {"SERVE_MODEL_PATH": str(tiny_model()), "SERVE_API_KEYS_FILE": str(key_file), "SERVE_API_KEYS_RELOAD_S": "0"}
    with service_process(env) as server, server.client() as client:
        assert status_with(client, "old-key-1") == 200
        write_keys(key_file, "new-key-2")
        assert status_with(client, "new-key-2") == 403  # no watch (0): nothing changes before the signal
        pid = server.process.pid
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: status_with(client, "new-key-2") == 200, what="the new key after SIGHUP", timeout_s=10)
        assert status_with(client, "old-key-1") == 403
        # A rotation that leaves no key keeps the keys in force (never opens the service), and says so.
        write_keys(key_file)
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: any("not reloaded" in line for line in server.lines), what="the refusal", timeout_s=10)
        assert status_with(client, "new-key-2") == 200 and client.get("/v1/models").status_code == 401
        assert server.process.poll() is None  # the same process throughout
    assert not any("new-key-2" in line or "old-key-1" in line for line in server.lines)  # keys are never logged


def test_a_changed_key_file_is_picked_up_without_a_signal(tmp_path: Path) -> None:
    key_file = tmp_path / "keys"
    write_keys(key_file, "first-key")
    env = {
        "SERVE_MODEL_PATH": str(tiny_model()),
        "SERVE_API_KEYS_FILE": str(key_file),
        "SERVE_API_KEYS_RELOAD_S": "0.2",
    }
    with service_process(env) as server, server.client() as client:
        assert status_with(client, "first-key") == 200
        write_keys(key_file, "second-key", "third-key")
        wait_until(lambda: status_with(client, "third-key") == 200, what="the rotated keys", timeout_s=10)
        assert status_with(client, "second-key") == 200 and status_with(client, "first-key") == 403


def preflight(client: httpx.Client, origin: str, method: str = "POST", headers: str = "x-api-key") -> httpx.Response:
    return client.options(
        "/predict",
        headers={"Origin": origin, "Access-Control-Request-Method": method, "Access-Control-Request-Headers": headers},
    )


def test_no_cross_origin_call_is_allowed_by_default() -> None:
    with (
        running_server(Settings(model_path=tiny_model(), api_keys=SecretStr("k1"))) as server,
        server.client() as client,
    ):
        refused = preflight(client, ORIGIN)
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "cors_forbidden" and "SERVE_CORS_ORIGINS" in refused.json()["detail"]
        assert "access-control-allow-origin" not in refused.headers
        simple = client.get("/health/live", headers={"Origin": ORIGIN})
        assert simple.status_code == 200 and "access-control-allow-origin" not in simple.headers


def test_named_origins_get_an_explicit_policy() -> None:
    settings = Settings(model_path=tiny_model(), cors_origins=f"{ORIGIN}/, https://ris.example.org")  # type: ignore[arg-type]
    assert settings.cors_origins == (ORIGIN, "https://ris.example.org")
    with running_server(settings) as server, server.client() as client:
        allowed = preflight(client, ORIGIN)
        assert allowed.status_code == 204, allowed.text
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        assert set(allowed.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
        assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
        assert allowed.headers["access-control-max-age"] == "600"
        assert preflight(client, "https://elsewhere.example.org").status_code == 403
        wrong_method = preflight(client, ORIGIN, method="DELETE")
        assert wrong_method.status_code == 403 and "methods GET, POST" in wrong_method.json()["detail"]
        simple = client.get("/health/live", headers={"Origin": ORIGIN})
        assert simple.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
        # Not a preflight (no Access-Control-Request-Method): the route answers as before.
        assert client.options("/predict").status_code == 405
