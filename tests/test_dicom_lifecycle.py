"""The DICOM node's settings, start and stop: checked settings, `--check` that starts nothing, one process per
outbox, and draining on SIGTERM like the rest of the service (new associations refused, nothing lost)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from dicom_support import (
    CHEST_JPEG,
    MODALITY_AE,
    SCP_AE,
    Destination,
    chest_model,
    dicom_settings,
    free_port,
    require_samples,
    with_new_uids,
)
from orthanc_support import echoscu, storescu
from pydantic import ValidationError
from service_support import service_process, wait_until

from service.app import create_app
from service.config import REPO_ROOT, Settings
from service.dicom.addresses import Caller, parse_callers, parse_destination
from service.dicom.outbox import Outbox, OutboxInUseError


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_samples()
    return chest_model(tmp_path_factory.mktemp("models"))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"dicom_port": 11112}, "SERVE_DICOM_DESTINATION is not"),
        ({"dicom_destination": "ftp://pacs/x"}, "must start with dicom:// (C-STORE) or http(s)://"),
        ({"dicom_destination": "dicom://pacs:104"}, "must be dicom://AET@host:port"),
        ({"dicom_allowed_callers": "ORTHANC@10.0.0.1, ORTHANC"}, "entry 'ORTHANC' is not of the form AET@host"),
        ({"dicom_ae_title": "A-TITLE-LONGER-THAN-16"}, "is not an AE title"),
    ],
)
def test_bad_dicom_settings_are_refused_naming_the_value(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings(**values)


def test_callers_and_destinations_parse() -> None:
    assert parse_callers(" ORTHANC@10.0.0.1 ,MODALITY@* ,") == (Caller("ORTHANC", "10.0.0.1"), Caller("MODALITY", "*"))
    dimse = parse_destination("dicom://ORTHANC@pacs.local:4242")
    assert (dimse.is_dimse, dimse.ae_title, dimse.host, dimse.port) == (True, "ORTHANC", "pacs.local", 4242)
    web = parse_destination("https://user:secret@pacs.local/dicom-web/")
    assert (web.is_dimse, web.port, web.url) == (False, 443, "https://user:secret@pacs.local/dicom-web")
    assert "secret" not in web.describe() and "user" not in web.describe()


def test_one_process_per_outbox(tmp_path: Path) -> None:
    first = Outbox(tmp_path / "outbox")
    first.open()
    with pytest.raises(OutboxInUseError, match="in use by another process"):
        Outbox(tmp_path / "outbox").open()
    first.close()
    second = Outbox(tmp_path / "outbox")
    second.open()  # free again once the first let go
    second.close()


def test_check_starts_neither_the_scp_nor_the_sender(models: Path, tmp_path: Path) -> None:
    port = free_port()
    held = Outbox(tmp_path / "outbox")
    held.open()  # as a running service holds it
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))  # the running service's SCP
        taken.listen()
        env = {
            "SERVE_MODEL_DIR": str(models),
            "SERVE_DICOM_PORT": str(port),
            "SERVE_DICOM_DESTINATION": "dicom://PACS@127.0.0.1:9",
            "SERVE_DICOM_OUTBOX": str(tmp_path / "outbox"),
        }
        command = [sys.executable, "-m", "service", "--check"]
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env)
    held.close()
    assert result.returncode == 0 and result.stdout.startswith("ok:"), result.stdout + result.stderr


@contextmanager
def serving(settings: Settings) -> Iterator[Any]:
    """A real uvicorn server in a thread, yielding its app (for the drain state)."""
    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, what="the server")
        wait_until(lambda: app.state.runtime.registry.ready, what="warm-up")
        yield app
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def test_while_draining_associations_are_refused_as_transient(models: Path, tmp_path: Path) -> None:
    settings = dicom_settings(models, tmp_path / "outbox", "dicom://PACS@127.0.0.1:9")
    assert settings.dicom_port is not None
    with serving(settings) as app:
        before = echoscu(host="127.0.0.1", port=settings.dicom_port, called_ae=SCP_AE, calling_ae=MODALITY_AE)
        app.state.drain.begin()  # what SIGTERM starts
        during = echoscu(host="127.0.0.1", port=settings.dicom_port, called_ae=SCP_AE, calling_ae=MODALITY_AE)
    assert before.returncode == 0
    assert during.returncode != 0 and "Temporary Congestion" in during.stdout + during.stderr


def test_sigterm_stops_the_node_cleanly_and_keeps_the_outbox(models: Path, tmp_path: Path) -> None:
    files = [with_new_uids(CHEST_JPEG, tmp_path / "in") for _ in range(2)]
    port, pacs = free_port(), Destination()  # the PACS is down: the results wait in the outbox
    env = {
        "SERVE_MODEL_DIR": str(models),
        "SERVE_DICOM_PORT": str(port),
        "SERVE_DICOM_ALLOWED_CALLERS": f"{MODALITY_AE}@127.0.0.1",
        "SERVE_DICOM_DESTINATION": pacs.url,
        "SERVE_DICOM_OUTBOX": str(tmp_path / "outbox"),
    }
    with service_process(env) as server, server.client() as client:
        storescu(files, host="127.0.0.1", port=port, called_ae=SCP_AE, calling_ae=MODALITY_AE)
        wait_until(lambda: client.get("/v1/dicom/outbox").json()["counts"]["pending"] == 2, what="both results")
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it shut down
        log = "".join(server.lines)
    assert "DICOM node stopped: 2 results pending in the outbox" in log and "Finished server process" in log
    assert len(list((tmp_path / "outbox" / "pending").glob("*.dcm"))) == len(files)
    pacs.start()
    try:
        with service_process(env):
            wait_until(lambda: len(pacs.received) == len(files), what="the results after the restart")
    finally:
        pacs.stop()
