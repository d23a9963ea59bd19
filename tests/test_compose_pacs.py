"""The compose `pacs` profile for real, as the README runs it: Orthanc (orthancteam/orthanc:23.11.1) routes one image
sent with dcmtk's storescu to the service's DICOM node, and the node's Structured Report comes back into the same study,
read over Orthanc's REST API (what its web UI shows), with the probabilities /predict gives for the same file.

Needs a Docker engine and docker-compose, like tests/test_container_stack.py (where none answers,
../shared/tools/local-docker.sh starts one and builds the Orthanc stand-in; elsewhere the test skips and says why).
Host ports are free ones, so it runs beside another stack. Run alone: pytest -m docker tests/test_compose_pacs.py.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pydicom
import pytest
from dicom_support import sr_probabilities
from orthanc_support import RemoteOrthanc, require_dcmtk
from prometheus_client.parser import text_string_to_metric_families
from pydicom.dataset import Dataset
from test_container_config import COMPOSE_ENV
from test_container_stack import IMAGE, LOCAL_DOCKER, ROOT, docker_env, free_port, sh, status_of, wait_for

pytestmark = pytest.mark.docker

ORTHANC_IMAGE = "orthancteam/orthanc:23.11.1"
# The README's file (in the repository; uncompressed, so storescu's default proposal carries it).
CHEST = ROOT / "tests" / "data" / "dicom_samples" / "CR-MONO1-10-chest_MONOCHROME1_no_meta.dcm"
ORTHANC_AE = "ORTHANC"  # docker/orthanc/orthanc.json
OWN_MANUFACTURER = "medimaging-platform"
QUIET_S = 5.0  # after the SR arrived: long enough for a routing loop to show itself


@dataclass
class PacsStack:
    env: dict[str, str]
    node_url: str
    orthanc: RemoteOrthanc
    orthanc_dicom_port: int

    def compose(self, *args: str, timeout: float = 300) -> str:
        return sh("docker-compose", "-f", "docker-compose.yml", "--profile", "pacs", *args, env=self.env).stdout


def ensure_orthanc_image(env: dict[str, str]) -> None:
    if sh("docker", "image", "inspect", ORTHANC_IMAGE, env=env, check=False).returncode == 0:
        return
    if LOCAL_DOCKER.is_file():
        sh("bash", "-c", f'source "{LOCAL_DOCKER}" && local_orthanc_image', env=env, timeout=1200)
    else:
        sh("docker", "pull", ORTHANC_IMAGE, env=env, timeout=1200)


@pytest.fixture(scope="module")
def pacs() -> Iterator[PacsStack]:
    require_dcmtk("storescu")
    if not CHEST.is_file():
        pytest.fail(f"real DICOM sample not found at {CHEST}")
    env = docker_env()
    ports = {name: free_port() for name in ("SERVICE_DICOM_PORT", "DICOM_NODE_PORT", "ORTHANC_HTTP_PORT")}
    ports |= {name: free_port() for name in ("ORTHANC_DICOM_PORT", "SERVICE_PORT", "PROMETHEUS_PORT")}
    env = {
        **env,
        **COMPOSE_ENV,
        "DOCKER_HOST": env.get("DOCKER_HOST", ""),
        "COMPOSE_PROJECT_NAME": f"medimaging-pacs-test-{os.getpid()}",
        **{name: str(port) for name, port in ports.items()},
    }
    env = {name: value for name, value in env.items() if value}
    sh("docker", "build", "--network", "host", "--target", "cpu", "-t", IMAGE, ".", env=env, timeout=1800)
    ensure_orthanc_image(env)
    stack = PacsStack(
        env,
        f"http://127.0.0.1:{ports['SERVICE_DICOM_PORT']}",
        RemoteOrthanc(f"http://127.0.0.1:{ports['ORTHANC_HTTP_PORT']}"),
        ports["ORTHANC_DICOM_PORT"],
    )
    try:
        stack.compose("up", "-d", "--no-build", "service-dicom", "orthanc")
        wait_for(lambda: status_of(f"{stack.node_url}/health/ready") == 200, what="the DICOM node ready", timeout_s=180)
        wait_for(lambda: status_of(f"{stack.orthanc.url}/system") == 200, what="Orthanc ready", timeout_s=120)
        yield stack
    finally:
        logs = sh("docker-compose", "-f", "docker-compose.yml", "--profile", "pacs", "logs", "--tail", "60", env=env,
                  check=False)  # fmt: skip
        print(logs.stdout[-6000:], file=sys.stderr)
        sh("docker-compose", "-f", "docker-compose.yml", "--profile", "pacs", "down", "-v", "--remove-orphans",
           env=env, check=False)  # fmt: skip


def referenced_uids(dataset: Dataset) -> set[str]:
    """Every ReferencedSOPInstanceUID anywhere in the data set (content tree and evidence sequences)."""
    found: set[str] = set()

    def visit(ds: Dataset) -> None:
        for element in ds:
            if element.keyword == "ReferencedSOPInstanceUID":
                found.add(str(element.value))
            elif element.VR == "SQ":
                for item in element.value:
                    visit(item)

    visit(dataset)
    return found


def node_counter(node_url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{node_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"{name}{labels or ''} is not among the node's metrics")


def test_one_storescu_to_orthanc_shows_the_nodes_sr_in_the_same_study(pacs: PacsStack) -> None:
    source = pydicom.dcmread(CHEST, force=True)
    # The README's command, as written (storescu's defaults: calling AE STORESCU, uncompressed syntaxes proposed).
    sh("storescu", "-aec", ORTHANC_AE, "127.0.0.1", str(pacs.orthanc_dicom_port), str(CHEST), env=pacs.env, timeout=60)

    [sr_id] = pacs.orthanc.wait_for_instances(1, modality="SR", timeout_s=120)
    sr = pacs.orthanc.instance_dataset(sr_id)
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID and sr.SOPInstanceUID != source.SOPInstanceUID
    assert sr.Manufacturer == OWN_MANUFACTURER
    assert source.SOPInstanceUID in referenced_uids(sr)
    # The study as Orthanc's web UI lists it: the modality's series and the node's SR series.
    series = pacs.orthanc.study_series(source.StudyInstanceUID)
    assert sorted(s["MainDicomTags"]["Modality"] for s in series) == sorted([source.Modality, "SR"])
    assert httpx.get(f"{pacs.orthanc.url}/app/explorer.html", timeout=10).status_code == 200

    answer = httpx.post(
        f"{pacs.node_url}/predict", files={"file": ("x.dcm", CHEST.read_bytes(), "application/dicom")}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    predicted = {p["label"]: p["probability"] for p in answer.json()["results"][0]["predictions"]}
    in_sr = sr_probabilities(sr)
    assert set(in_sr) == set(predicted)
    for label, probability in predicted.items():
        assert in_sr[label] == pytest.approx(probability, abs=1e-6), label

    # No loop: the SR came back to Orthanc and was not routed to the node again.
    time.sleep(QUIET_S)
    assert pacs.orthanc.count_instances() == 2
    forwards = pacs.orthanc.jobs("DicomModalityStore")
    assert [job["State"] for job in forwards] == ["Success"], forwards
    assert node_counter(pacs.node_url, "serve_dicom_instances_received_total", via="dimse") == 1
    assert node_counter(pacs.node_url, "serve_dicom_instances_inferred_total") == 1
