"""Schemathesis against the service's own OpenAPI document, on a real `python -m service` process.

Every operation gets schema-driven examples, boundary cases (the coverage phase) and random
fuzzing, with a fixed seed and a bounded example count, so a run is repeatable and takes seconds.
Checks: no 5xx; every status, content type, header and body is one the document declares. With
auth on, the same run also proves 401/403 are documented wherever they can answer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from service_support import service_process

from medcore.record import ModelRecord
from service.config import BUNDLED_MODEL

pytest.importorskip("schemathesis")

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
)
SEED = 20261201
MAX_EXAMPLES = 10
API_KEY = "schemathesis-test-key"


def _bundled_identity() -> tuple[str, str]:
    import onnxruntime as ort

    from medcore.record import ONNX_METADATA_KEY

    session = ort.InferenceSession(str(BUNDLED_MODEL), providers=["CPUExecutionProvider"])
    record = ModelRecord.from_json(session.get_modelmeta().custom_metadata_map[ONNX_METADATA_KEY])
    return record.name, record.version


def _run_schemathesis(url: str, tmp_path: Path, headers: dict[str, str] | None = None) -> None:
    """Run on a copy of /openapi.json (fetched with a key, in case docs are guarded); requests carry `headers`."""
    name, version = _bundled_identity()
    document = tmp_path / "openapi.json"
    document.write_bytes(httpx.get(f"{url}/openapi.json", headers={"X-API-Key": API_KEY}, timeout=30).content)
    # Real path parameters, so generated requests reach the model instead of all ending in 404.
    config = tmp_path / "schemathesis.toml"
    lines = ["[parameters]", f'name = "{name}"', f'version = "{version}"']
    config.write_text("\n".join(lines) + "\n")
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "run",
        str(document),
        "--url",
        url,
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "1",
        "--phases",
        "examples,coverage,fuzzing",
        "--suppress-health-check",
        "all",
    ]
    for header, value in (headers or {}).items():
        command += ["--header", f"{header}: {value}"]
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "PYTHONPATH": f"{tests}{os.pathsep}{tests.parent}"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, f"schemathesis found problems:\n{result.stdout[-8000:]}\n{result.stderr[-2000:]}"
    assert "passed" in result.stdout


def dicom_node(tmp_path: Path) -> dict[str, str]:
    """The DICOM node on (STOW-RS and the outbox listing answer for real); its results wait for a peer never up."""
    return {"SERVE_DICOM_DESTINATION": "dicom://NOBODY@127.0.0.1:9", "SERVE_DICOM_OUTBOX": str(tmp_path / "outbox")}


@pytest.mark.slow
def test_openapi_conformance_without_auth(tmp_path: Path) -> None:
    with service_process(dicom_node(tmp_path)) as server:
        _run_schemathesis(server.url, tmp_path)
        assert server.process.poll() is None, "the server died during the run"


@pytest.mark.slow
def test_openapi_conformance_with_auth_on(tmp_path: Path) -> None:
    """Without a key every guarded route must answer a documented 401; with one, the full run passes."""
    env = {"SERVE_API_KEYS": API_KEY, **dicom_node(tmp_path)}
    with service_process(env) as server:
        _run_schemathesis(server.url, tmp_path)
        _run_schemathesis(server.url, tmp_path, headers={"X-API-Key": API_KEY})
        assert server.process.poll() is None, "the server died during the run"
