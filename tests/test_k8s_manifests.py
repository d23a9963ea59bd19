"""Kubernetes manifests: rendered with kustomize, validated offline against the Kubernetes schema, and held to the app.

Tools: `kubectl kustomize` (or a `kustomize` binary) renders; `kubernetes-validate` (dev extra) validates. Each
test that needs one skips, naming it, where it is absent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_container_config import CONTRACT_METRICS

from service.app import create_app
from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu", "hardened")


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """The rendered resources of a kustomization directory."""
    if shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(directory)]
    elif shutil.which("kustomize"):
        command = ["kustomize", "build", str(directory)]
    else:
        pytest.skip("neither kubectl nor kustomize is installed to render deploy/k8s")
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(command)}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    found = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
    found = found or shutil.which("kubernetes-validate")
    if found is None:
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate; it is in the dev extra)")
    return subprocess.run(
        [found, "--strict", "--quiet", str(path)], capture_output=True, text=True, timeout=300, check=False
    )


def served_paths() -> set[str]:
    """Every path the app serves, from its OpenAPI document (the model is not loaded for this)."""
    return set(create_app(Settings()).openapi()["paths"])


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    kinds = {doc["kind"]: doc for doc in docs}
    assert len(kinds) == len(docs), "one resource of each kind expected"
    return kinds


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (main,) = by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["containers"]
    return dict(main)


def overlay_with_component(tmp_path: Path) -> Path:
    """A throw-away overlay: the cpu overlay plus the custom-metric HPA component and the README's PVC patch."""
    here = tmp_path / "overlay"
    here.mkdir()
    rel = os.path.relpath(K8S, here)
    readme = (K8S / "README.md").read_text()
    patch = readme.split("# overlays/<yours>/models.yaml, listed under `patches:`\n", 1)[1].split("```", 1)[0]
    (here / "models.yaml").write_text(patch)
    (here / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [f"{rel}/overlays/cpu"],
                "components": [f"{rel}/components/custom-metric-hpa"],
                "patches": [{"path": "models.yaml"}],
            }
        )
    )
    return here


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_passes_the_kubernetes_schema(overlay: str, tmp_path: Path) -> None:
    docs = kustomize(K8S / "overlays" / overlay)
    assert set(by_kind(docs)) == {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    result = validate(rendered)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_rejects_a_broken_manifest(tmp_path: Path) -> None:
    docs = kustomize(K8S / "overlays" / "cpu")
    deployment = by_kind(docs)["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["portt"] = 8000
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(deployment))
    assert validate(broken).returncode != 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ports_and_settings_match_the_service(overlay: str) -> None:
    docs = by_kind(kustomize(K8S / "overlays" / overlay))
    main = container(list(docs.values()))
    routes = served_paths()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"]["path"] in routes, f"{probe} probes a path the service does not serve"
    assert main["ports"][0]["containerPort"] == Settings().port
    settings = docs["ConfigMap"]["data"]
    fields = {f"SERVE_{name.upper()}" for name in Settings.model_fields}
    assert set(settings) <= fields, f"unknown settings {sorted(set(settings) - fields)}"
    in_pod_only = {"SERVE_API_KEYS_FILE"}  # a path inside the pod (the Secret's mount)
    values = {k.removeprefix("SERVE_").lower(): v for k, v in settings.items() if k not in in_pod_only}
    assert Settings(**values).model_dir == Path("/models")
    assert main["envFrom"][0]["configMapRef"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    mounts = {mount["name"]: mount for mount in main["volumeMounts"]}
    assert mounts["models"]["mountPath"] == "/models" and mounts["models"]["readOnly"]
    assert main["resources"]["requests"] and main["resources"]["limits"]["memory"]
    assert (
        docs["Service"]["spec"]["selector"].items()
        <= docs["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    )
    assert docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]


def test_gpu_overlay_asks_for_a_gpu_and_the_cuda_image() -> None:
    docs = by_kind(kustomize(K8S / "overlays" / "gpu"))
    main = container(list(docs.values()))
    assert main["image"] == "medimaging-service:gpu"
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert docs["ConfigMap"]["data"]["SERVE_PROVIDER"] == "cuda"
    cpu = container(kustomize(K8S / "overlays" / "cpu"))
    assert cpu["image"] == "medimaging-service:latest" and "nvidia.com/gpu" not in cpu["resources"]["limits"]


def test_custom_metric_variant_scales_on_service_gauges(tmp_path: Path) -> None:
    docs = by_kind(kustomize(overlay_with_component(tmp_path)))
    metrics = docs["HorizontalPodAutoscaler"]["spec"]["metrics"]
    names = {metric["pods"]["metric"]["name"] for metric in metrics}
    assert names == {"serve_in_flight", "serve_queue_depth"} and names <= CONTRACT_METRICS
    rules = yaml.safe_load((K8S / "components/custom-metric-hpa/prometheus-adapter-rules.yaml").read_text())
    assert {rule["name"]["as"] for rule in rules["rules"]} == names
    # The README's model-volume patch renders: a PVC in place of the seeded emptyDir.
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (models,) = [volume for volume in pod["volumes"] if volume["name"] == "models"]
    assert models == {"name": "models", "persistentVolumeClaim": {"claimName": "medimaging-models", "readOnly": True}}
    assert not pod.get("initContainers")
    rendered = tmp_path / "custom.yaml"
    rendered.write_text(yaml.safe_dump_all(list(docs.values())))
    result = validate(rendered)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kserve_example_runs_the_image_on_the_open_inference_protocol() -> None:
    service = yaml.safe_load((K8S / "kserve/inferenceservice.yaml").read_text())
    assert service["apiVersion"] == "serving.kserve.io/v1beta1" and service["kind"] == "InferenceService"
    (main,) = service["spec"]["predictor"]["containers"]
    assert main["name"] == "kserve-container" and main["ports"][0]["containerPort"] == Settings().port
    fields = {f"SERVE_{name.upper()}" for name in Settings.model_fields}
    assert {env["name"] for env in main["env"]} <= fields
    routes = served_paths()
    for probe in ("readinessProbe", "livenessProbe"):
        assert main[probe]["httpGet"]["path"] in routes, f"{probe}: {main[probe]['httpGet']['path']} is not served"
    assert any(str(route).startswith("/v2/models/") for route in routes), "the service has no OIP /v2 routes"


def test_hardened_overlay_reads_the_keys_from_a_secret_it_can_rotate() -> None:
    docs = by_kind(kustomize(K8S / "overlays" / "hardened"))
    main = container(list(docs.values()))
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    key_file = Path(docs["ConfigMap"]["data"]["SERVE_API_KEYS_FILE"])
    assert float(docs["ConfigMap"]["data"]["SERVE_API_KEYS_RELOAD_S"]) > 0  # Secret updates reach the service
    (volume,) = [v for v in pod["volumes"] if v["name"] == "api-keys"]
    secret = volume["secret"]
    assert secret["secretName"] == "medimaging-api-keys" and secret["optional"] is False  # no Secret: no pod
    # Readable by the pod's group (runAsGroup 0) and nobody else.
    assert pod["securityContext"]["runAsGroup"] == 0 and secret["defaultMode"] == 0o440
    (mount,) = [m for m in main["volumeMounts"] if m["name"] == "api-keys"]
    # A whole-directory mount (no subPath): kubelet swaps the files when the Secret changes, a subPath never sees it.
    assert "subPath" not in mount and mount["readOnly"] and key_file.parent == Path(mount["mountPath"])
    assert key_file.name == "api-keys"
    assert Settings().api_keys_reload_s > 0
    cpu = by_kind(kustomize(K8S / "overlays" / "cpu"))
    assert "SERVE_API_KEYS_FILE" not in cpu["ConfigMap"]["data"]  # the easy start stays open (and warns)
