"""scripts/smoke.sh against a real service on a free port: it passes on a healthy one, names the failure otherwise."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from service_support import running_server

from service.config import BUNDLED_MODEL, Settings

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "scripts/smoke.sh"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="scripts/smoke.sh needs curl")


def smoke(url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SMOKE), url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def test_smoke_passes_on_a_healthy_service() -> None:
    with running_server(Settings(model_path=BUNDLED_MODEL)) as server:
        result = smoke(server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("health", "predict", "error case", "metrics"):
        assert f"smoke: ok   {step}" in result.stdout
    assert '"label":"pneumonia"' in result.stdout.replace(" ", "")


def test_smoke_fails_with_a_reason_when_nothing_listens() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening: connections are refused
        result = smoke(url, SMOKE_READY_TIMEOUT="1")
    assert result.returncode == 1
    assert "smoke: FAIL health: GET /health/ready answered 000" in result.stderr
