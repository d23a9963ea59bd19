"""The compose stack for real: build the CPU image, start the service and Prometheus, smoke-test, query, kill -9.

Needs a Docker engine and docker-compose. Where none answers, ../shared/tools/local-docker.sh starts one (root, this
project's machines); elsewhere the test skips and says why (under CI=true that fails). Run alone:
pytest -m docker tests/test_container_stack.py. No compose variable is set (COMPOSE_ENV): the plain command works.
Grafana is not started (its image cannot be pulled here); its dashboard's queries are run against this Prometheus.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from test_container_config import COMPOSE_ENV, dashboard_queries, metric_names

ROOT = Path(__file__).resolve().parents[1]
LOCAL_DOCKER = ROOT.parent / "shared" / "tools" / "local-docker.sh"
IMAGE = "medimaging-service:latest"
BASE_IMAGE = "python:3.11-slim-bookworm"
# Published uncompressed size of the official python:3.11-slim-bookworm (the local stand-in is bigger), for the
# size goal: our layers (image minus the base we built on) plus this.
OFFICIAL_SLIM_BYTES = 130_000_000
SIZE_GOAL_BYTES = 450_000_000
RESTART_GOAL_S = 10.0
# The bound the test holds: the goal plus 50% for this project's shared 2-core machines, where other jobs slow the
# engine's restart and the model's warm-up (measured here alone: see the [container check] line).
RESTART_BOUND_S = 1.5 * RESTART_GOAL_S
SAMPLE = ROOT / "scripts" / "sample" / "chest-xray-pa.jpg"

pytestmark = pytest.mark.docker


def sh(*args: str, env: dict[str, str], timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(condition: Callable[[], bool], *, what: str, timeout_s: float, every_s: float = 0.2) -> float:
    """Seconds until `condition()` held; AssertionError naming `what` after `timeout_s`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)
    return time.monotonic() - started


def status_of(url: str) -> int:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return 0


def docker_env() -> dict[str, str]:
    """The environment whose DOCKER_HOST answers; starts the local engine and base images where that is the way."""
    for tool in ("docker", "docker-compose"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: the container check needs a Docker engine and docker-compose")
    env = dict(os.environ)
    if sh("docker", "info", env=env, timeout=30, check=False).returncode == 0:
        return env
    if not LOCAL_DOCKER.is_file() or os.geteuid() != 0:
        pytest.skip(f"no Docker engine answers, and {LOCAL_DOCKER} (needs root) is not available to start one")
    script = f'source "{LOCAL_DOCKER}" && local_base_images && echo "DOCKER_HOST=$DOCKER_HOST"'
    started = sh("bash", "-c", script, env=env, timeout=1200, check=False)
    host = re.search(r"^DOCKER_HOST=(\S+)$", started.stdout, flags=re.MULTILINE)
    if started.returncode != 0 or host is None:
        pytest.skip(f"{LOCAL_DOCKER} could not start an engine: {started.stderr[-500:]}")
    return {**env, "DOCKER_HOST": host.group(1)}


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str], record_property: Callable[[str, object], None]) -> Callable[[str], None]:
    """Print a measured figure past pytest's capture (CI's log keeps it) and record it in the JUnit properties."""

    def write(line: str) -> None:
        record_property("container_check", line)
        with capsys.disabled():
            print(f"\n[container check] {line}", flush=True)

    return write


@dataclass
class Stack:
    env: dict[str, str]
    service_url: str
    prometheus_url: str
    build_s: float

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return sh("docker-compose", "-f", "docker-compose.yml", *args, env=self.env, timeout=timeout)

    def query(self, promql: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10).json()
        assert answer["status"] == "success", f"{promql}: {answer}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    env = docker_env()
    service_port, prometheus_port = free_port(), free_port()
    env = {
        **env,
        **COMPOSE_ENV,
        "DOCKER_HOST": env.get("DOCKER_HOST", ""),
        "COMPOSE_PROJECT_NAME": f"medimaging-test-{os.getpid()}",
        "SERVICE_PORT": str(service_port),
        "PROMETHEUS_PORT": str(prometheus_port),
    }
    env = {name: value for name, value in env.items() if value}
    started = time.monotonic()
    # Host networking for the build: the local engine's bridge may not reach the package index; layers are cached.
    sh("docker", "build", "--network", "host", "--target", "cpu", "-t", IMAGE, ".", env=env, timeout=1800)
    build_s = time.monotonic() - started
    running = Stack(env, f"http://127.0.0.1:{service_port}", f"http://127.0.0.1:{prometheus_port}", build_s)
    try:
        running.compose("up", "-d", "--no-build", "service", "prometheus")
        wait_for(
            lambda: status_of(f"{running.service_url}/health/ready") == 200, what="the service ready", timeout_s=180
        )
        yield running
    finally:
        logs = sh("docker-compose", "-f", "docker-compose.yml", "logs", "--tail", "40", env=env, check=False)
        print(logs.stdout[-4000:], file=sys.stderr)
        sh("docker-compose", "-f", "docker-compose.yml", "down", "-v", "--remove-orphans", env=env, check=False)


def test_image_is_small_non_root_and_torch_free(stack: Stack, report: Callable[[str], None]) -> None:
    def size(image: str) -> int:
        return int(sh("docker", "image", "inspect", "-f", "{{.Size}}", image, env=stack.env).stdout)

    ours = size(IMAGE) - size(BASE_IMAGE)
    estimate = ours + OFFICIAL_SLIM_BYTES
    report(
        f"image {size(IMAGE) / 1e6:.0f} MB here = {ours / 1e6:.0f} MB over the stand-in base,"
        f" so ~{estimate / 1e6:.0f} MB on the official slim base (+{OFFICIAL_SLIM_BYTES / 1e6:.0f} MB);"
        f" build {stack.build_s:.0f} s"
    )
    assert estimate <= SIZE_GOAL_BYTES, (
        f"~{estimate / 1e6:.0f} MB on the official base, goal {SIZE_GOAL_BYTES / 1e6:.0f}"
    )
    probe = (
        "import importlib.util as u, os, shutil, sys; "
        "print(os.getuid(), u.find_spec('torch') is None, u.find_spec('pip') is None, "
        "[t for t in ('gcc', 'cc', 'g++', 'make') if shutil.which(t)])"
    )
    out = sh("docker", "run", "--rm", "--entrypoint", "python", IMAGE, "-c", probe, env=stack.env).stdout.split(None, 3)
    assert out[:3] == ["10001", "True", "True"], f"uid, no torch, no pip in the venv: {out}"
    assert out[3].strip() == "[]", f"build tools left in the image: {out[3]}"


def test_smoke_script_passes_against_the_container(stack: Stack) -> None:
    result = subprocess.run(
        ["bash", "scripts/smoke.sh", stack.service_url], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke: PASS" in result.stdout


def queries_to_check() -> list[tuple[str, str]]:
    """(where, PromQL): every dashboard query, every recording rule, and every series an alert reads."""
    checks = [(f"dashboard {title!r}", expr.replace("$__rate_interval", "1m")) for title, expr in dashboard_queries()]
    rules = yaml.safe_load((ROOT / "docker/prometheus/alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                checks.append((f"recording rule {rule['record']}", rule["expr"]))
                continue
            # An alert's full expression is empty while all is well; the series it compares must exist.
            names = metric_names(rule["expr"]) | set(re.findall(r"\b(service:[a-z0-9_:]+|up)\b", rule["expr"]))
            checks += [(f"alert {rule['alert']} reads {name}", f'{{__name__="{name}"}}') for name in sorted(names)]
    return checks


def test_prometheus_scrapes_the_service_and_every_query_has_data(stack: Stack, report: Callable[[str], None]) -> None:
    def target_up() -> bool:
        return any(sample["value"][1] == "1" for sample in stack.query('up{job="medimaging-service"}'))

    wait_for(target_up, what="Prometheus to report the service target up", timeout_s=90, every_s=2)
    checks = queries_to_check()
    missing: list[str] = []
    image = SAMPLE.read_bytes()

    def all_have_data() -> bool:
        with httpx.Client(base_url=stack.service_url, timeout=30) as client:
            for _ in range(3):
                assert client.post("/predict", files={"file": ("x.jpg", image, "image/jpeg")}).status_code == 200
            client.post("/predict", files={"file": ("x.txt", b"not an image", "text/plain")})
        missing[:] = [f"{where}: {promql}" for where, promql in checks if not stack.query(promql)]
        return not missing

    try:
        waited = wait_for(all_have_data, what="data for every query", timeout_s=240, every_s=5)
    except AssertionError:
        raise AssertionError("no data from Prometheus for:\n" + "\n".join(missing)) from None
    report(f"{len(checks)} PromQL queries (dashboard, recording rules, alert series) had data after {waited:.0f} s")


def test_restart_policy_brings_a_killed_service_back_ready(stack: Stack, report: Callable[[str], None]) -> None:
    container = stack.compose("ps", "-q", "service").stdout.strip()
    state = json.loads(sh("docker", "inspect", "-f", "{{json .State}}", container, env=stack.env).stdout)
    assert state["Running"] and state["Pid"] > 0
    killed = time.monotonic()
    try:
        os.kill(state["Pid"], signal.SIGKILL)  # the container's main process, from the host (root)
    except PermissionError:
        sh("docker", "kill", "--signal", "KILL", container, env=stack.env)
    ready = f"{stack.service_url}/health/ready"
    wait_for(lambda: status_of(ready) != 200, what="the killed service to stop answering", timeout_s=10, every_s=0.05)
    wait_for(lambda: status_of(ready) == 200, what="the restarted service to be ready", timeout_s=60, every_s=0.1)
    took = time.monotonic() - killed
    after = json.loads(sh("docker", "inspect", "-f", "{{json .State}}", container, env=stack.env).stdout)
    restarts = int(sh("docker", "inspect", "-f", "{{.RestartCount}}", container, env=stack.env).stdout)
    report(f"kill -9 of the service's main process to ready again: {took:.1f} s (goal < {RESTART_GOAL_S:.0f} s)")
    assert after["Pid"] != state["Pid"] and restarts >= 1
    assert took < RESTART_BOUND_S, f"restart to ready took {took:.1f} s (bound {RESTART_BOUND_S:.0f} s)"


def test_hardened_service_needs_a_key_from_the_secret_and_rotates_it_on_sighup(
    stack: Stack, tmp_path: Path, report: Callable[[str], None]
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    secrets.chmod(0o755)
    key_file = secrets / "api-keys"
    key_file.write_text("# test keys\nfirst-key-a1\n")
    key_file.chmod(0o644)  # the service runs as uid 10001
    env = {**stack.env, "API_KEYS_DIR": str(secrets)}
    files = ("-f", "docker-compose.yml", "-f", "docker-compose.hardened.yml")
    sh("docker-compose", *files, "up", "-d", "--no-build", "service", env=env, timeout=300)
    models = f"{stack.service_url}/v1/models"

    def status(key: str | None) -> int:
        try:
            return httpx.get(models, headers={"X-API-Key": key} if key else {}, timeout=5).status_code
        except httpx.HTTPError:
            return 0

    wait_for(lambda: status("first-key-a1") == 200, what="the hardened service to take its key", timeout_s=180)
    assert status(None) == 401 and status("wrong") == 403
    assert status_of(f"{stack.service_url}/health/ready") == 200  # the probe stays open
    key_file.write_text("second-key-b2\n")
    sh("docker-compose", *files, "kill", "-s", "HUP", "service", env=env)
    took = wait_for(lambda: status("second-key-b2") == 200, what="the rotated key", timeout_s=30, every_s=0.1)
    assert status("first-key-a1") == 403
    container = sh("docker-compose", *files, "ps", "-q", "service", env=env).stdout.strip()
    restarts = int(sh("docker", "inspect", "-f", "{{.RestartCount}}", container, env=env).stdout)
    assert restarts == 0, "the key rotation restarted the service"
    report(f"hardened compose: 401 without a key, key rotated by SIGHUP in {took:.1f} s without a restart")
