"""PHI canary: a real DICOM carrying canary patient and institution names goes through every route, good and
corrupt (STOW-RS and the C-STORE SCP included), and the canaries appear in no log line, metric, response (body or
header) or file the service writes; only in the results it sends the PACS and in its outbox, which must hold them."""

from __future__ import annotations

import base64
import os
import random
import shutil
import time
from pathlib import Path

import httpx
import pydicom
import pytest
from dicom_support import Destination, free_port, with_new_uids
from orthanc_support import storescu
from service_support import TINY_RECORD, build_heatmap_model, record_for, service_process, tiny_model, wait_until

from service.config import REPO_ROOT
from service.dicom.stow import encode_related

DICOM_SAMPLES = REPO_ROOT.parent / "shared" / "data" / "dicom_samples"
SOURCE = "SIIM_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819_CR_chest_MONOCHROME2_jpeg.dcm"
CANARIES = {
    "PatientName": "Canary^Phi^Q7X3",
    "PatientID": "CANARYID9B21",
    "InstitutionName": "Canary Institute Z5D6",
}
FILE_NAME = "canary-file-K2C4.dcm"
# What must never come out: each value, its parts, and the upload's file name.
NEEDLES = ("q7x3", "canaryid9b21", "z5d6", "k2c4", "canary")
SKIPPED_DIRS = {".git", ".venv", ".venv-serve", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}


def canary_dicom(folder: Path) -> bytes:
    source = DICOM_SAMPLES / SOURCE
    if not source.is_file():
        pytest.skip(f"the DICOM samples are not at {DICOM_SAMPLES}; CI keeps ../shared beside the clone")
    dataset = pydicom.dcmread(source)
    for keyword, value in CANARIES.items():
        setattr(dataset, keyword, value)
    dataset.InstitutionAddress = "1 Canary Road, Z5D6 Town"
    dataset.ReferringPhysicianName = "Canary^Doctor^Q7X3"
    path = folder / "canary.dcm"
    dataset.save_as(path)
    return path.read_bytes()


def corrupt_copies(data: bytes) -> dict[str, bytes]:
    """Damaged versions that still carry the canary tags in their header."""
    rng = random.Random(7)
    header_end = data.index(b"\xe0\x7f\x10\x00")  # the PixelData tag: everything before it holds the tags
    flipped = bytearray(data)
    for offset in rng.sample(range(header_end + 16, len(data)), 64):
        flipped[offset] ^= 0xFF
    broken_header = bytearray(data)
    for offset in rng.sample(range(132, header_end), 8):
        broken_header[offset] ^= 0x5A
    return {
        "pixel-data-cut": data[: header_end + 64],
        "half": data[: len(data) // 2],
        "pixels-flipped": bytes(flipped),
        "header-flipped": bytes(broken_header),
        "tags-only": data[:header_end],
    }


def found_canaries(text: str) -> list[str]:
    lowered = text.lower()
    return [needle for needle in NEEDLES if needle in lowered]


CAM_NAME, CAM_VERSION = "cam-test", "0.0.1"  # the default model (first name): it can explain


def model_dir(root: Path) -> Path:
    """Two models in the directory layout: the tiny one, and a tiny class-activation-map one with heatmaps."""
    tiny = root / TINY_RECORD["name"] / TINY_RECORD["version"]
    tiny.mkdir(parents=True)
    shutil.copy(tiny_model(), tiny / "model.onnx")
    build_heatmap_model(root / CAM_NAME / CAM_VERSION / "model.onnx", record_for(CAM_NAME, CAM_VERSION))
    return root


def responses_through_every_route(client: httpx.Client, good: bytes, bad: dict[str, bytes]) -> list[httpx.Response]:
    name, version = TINY_RECORD["name"], TINY_RECORD["version"]
    predict_paths = ["/predict", f"/v1/models/{name}/predict", f"/v1/models/{name}/versions/{version}/predict"]
    explain_paths = ["/predict?explain=true", f"/v1/models/{CAM_NAME}/versions/{CAM_VERSION}/predict?explain=true"]
    answers = []
    for data in (good, *bad.values()):
        upload = {"file": (FILE_NAME, data, "application/dicom")}
        for path in predict_paths + explain_paths:
            answers.append(client.post(path, files=upload))
        answers.append(client.post(f"/v1/models/{name}/predict?explain=true", files=upload))  # cannot explain: 422
        answers.append(client.post("/predict", content=data, headers={"Content-Type": "application/dicom"}))
        several = [("file", (FILE_NAME, data, "application/dicom")), ("file", (FILE_NAME, good, "application/dicom"))]
        answers.append(client.post("/predict", files=several))
        image = {"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(data).decode()]}
        for model in (name, CAM_NAME):
            answers.append(client.post(f"/v2/models/{model}/infer", json={"inputs": [image]}))
        content_type, body = encode_related([data])
        answers.append(client.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type}))
    paths = ("/model", "/v1/models", f"/v1/models/{name}", f"/v2/models/{name}", "/metrics", "/openapi.json")
    for path in (*paths, "/v1/dicom/outbox"):
        answers.append(client.get(path))
    return answers


def test_canaries_never_leave_the_service(tmp_path: Path) -> None:
    outside = tmp_path / "inputs"
    watched = tmp_path / "service"  # the model, TMPDIR and HOME of the service: any file it writes lands here
    for folder in (outside, watched / "tmp", watched / "home"):
        folder.mkdir(parents=True)
    good = canary_dicom(outside)
    assert all(value.encode() in good for value in CANARIES.values())  # the canaries really are in the file
    bad = corrupt_copies(good)
    pacs, port = Destination().start(), free_port()  # the DICOM node's results go to this C-STORE SCP
    env = {
        "SERVE_MODEL_DIR": str(model_dir(watched / "models")),
        "SERVE_LOG_LEVEL": "debug",
        "TMPDIR": str(watched / "tmp"),
        "HOME": str(watched / "home"),
        "SERVE_DICOM_PORT": str(port),
        "SERVE_DICOM_ALLOWED_CALLERS": "STORESCU@127.0.0.1",
        "SERVE_DICOM_DESTINATION": pacs.url,
        # The outbox holds results, which carry the patient module: PHI by design, outside the watched folders.
        "SERVE_DICOM_OUTBOX": str(tmp_path / "outbox"),
    }
    started = time.time()
    try:
        with service_process(env) as server, server.client() as client:
            answers = responses_through_every_route(client, good, bad)
            resent = with_new_uids(outside / "canary.dcm", outside / "dimse")  # new UIDs, same canaries
            storescu([resent], host="127.0.0.1", port=port, called_ae="MEDIMAGING")
            wait_until(lambda: len(pacs.received) >= 2, what="the results of the STOW-RS and the C-STORE instance")
            answers.append(client.get("/v1/dicom/outbox"))
            metrics_text = client.get("/metrics").text
    finally:
        pacs.stop()
    assert all(CANARIES["PatientName"] in str(sr.PatientName) for sr in pacs.datasets())  # PHI goes to the PACS
    statuses = [answer.status_code for answer in answers]
    assert all(status < 500 for status in statuses)
    stow = [answer.status_code for answer in answers if answer.request.url.path == "/dicomweb/studies"]
    assert stow[0] == 200 and any(status >= 400 for status in stow[1:])  # good, then the corrupt copies
    assert statuses[0] == 200, answers[0].text  # the canary DICOM itself is served normally
    assert any(400 <= status < 500 for status in statuses)  # and the corrupt copies took the error paths
    explained = [answer.json() for answer in answers if "explain=true" in str(answer.request.url)]
    assert any(  # the explanation (decoded image and heatmaps as PNGs) went out too
        result.get("explanation") for body in explained for result in body.get("results", [])
    )
    assert sum(len(embedded_pngs(answer)) for answer in answers) >= 2
    for answer in answers:
        embedded = "".join(png.decode("latin-1") for png in embedded_pngs(answer))  # base64 would hide a tEXt chunk
        leaked = found_canaries(answer.text + embedded + " ".join(f"{k}: {v}" for k, v in answer.headers.items()))
        assert not leaked, f"{answer.request.method} {answer.request.url.path} -> {answer.status_code}: {leaked}"
    assert not found_canaries(metrics_text)
    log_text = "".join(server.lines)
    assert log_text.count("service.access") >= len(answers)  # the logs were captured
    assert not found_canaries(log_text), [line for line in server.lines if found_canaries(line)][:3]
    for path in written_files(watched, since=0) + written_files(REPO_ROOT, since=started):
        assert not found_canaries(path.read_bytes().decode("latin-1")), f"{path} holds a canary"


def embedded_pngs(answer: httpx.Response) -> list[bytes]:
    """The decoded bytes of every base64 PNG (`image_png`, `png`) in a JSON answer."""
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return []
    found: list[bytes] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("image_png", "png") and isinstance(item, str):
                    found.append(base64.b64decode(item))
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(answer.json())
    return found


def written_files(root: Path, *, since: float) -> list[Path]:
    """Files under `root` modified after `since` (skipping version control, environments and caches)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIPPED_DIRS]
        for name in files:
            path = Path(folder) / name
            try:
                stat = path.stat()
            except OSError:
                continue
            if stat.st_mtime >= since and stat.st_size < 50_000_000 and path.is_file():
                found.append(path)
    return found
