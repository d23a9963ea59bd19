"""Nothing lost, nothing sent twice: the outbox across SIGKILL and restart, its crash recovery, and dead letters.

The service runs as `python -m service` (a real process, killed with SIGKILL); the destination is a pynetdicom
C-STORE SCP that counts every reception, so a result sent twice would be seen even where a PACS would store it once.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from dicom_support import (
    CHEST_JPEG,
    MODALITY_AE,
    SCP_AE,
    Destination,
    chest_model,
    destination,
    dicom_settings,
    free_port,
    require_samples,
    sr_source_uid,
    with_new_uids,
)
from orthanc_support import storescu
from pydicom.uid import ImplicitVRLittleEndian
from service_support import metric_samples, running_server, sample, service_process, wait_until

from service.dicom.outbox import Backoff, Outbox, Result


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_samples()
    return chest_model(tmp_path_factory.mktemp("models"))


def node_env(models: Path, outbox: Path, dest: Destination, port: int) -> dict[str, str]:
    return {
        "SERVE_MODEL_DIR": str(models),
        "SERVE_DICOM_PORT": str(port),
        "SERVE_DICOM_ALLOWED_CALLERS": f"{MODALITY_AE}@127.0.0.1",
        "SERVE_DICOM_DESTINATION": dest.url,
        "SERVE_DICOM_OUTBOX": str(outbox),
        "SERVE_DICOM_RETRY_BASE_S": "0.2",
        "SERVE_DICOM_RETRY_CAP_S": "0.5",
    }


def test_sigkill_with_results_in_the_outbox_then_restart_every_result_arrives_once(
    models: Path, tmp_path: Path
) -> None:
    files = [with_new_uids(CHEST_JPEG, tmp_path / "in") for _ in range(5)]
    sources = sorted(p.stem for p in files)
    dest = Destination()  # not started: the PACS is down
    port, outbox = free_port(), tmp_path / "outbox"
    env = node_env(models, outbox, dest, port)
    with service_process(env) as first:
        storescu(files, host="127.0.0.1", port=port, called_ae=SCP_AE, calling_ae=MODALITY_AE)
        # At once, with instances still in the inbox or their results queued: as a power cut would leave it.
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
    inbox, pending = (sorted(p.stem for p in (outbox / name).glob("*.dcm")) for name in ("inbox", "pending"))
    committed = sorted(p.stem for p in (outbox / "instances").glob("*.json"))
    assert sorted(set(inbox) | set(committed)) == sources  # every accepted instance is on disk, run or still to run
    assert len(committed) <= len(pending) <= len(committed) + 1  # + the result being written at the kill, if any
    (outbox / "pending" / ".9.9.json.abcdef.tmp").write_text("{")  # as a writer killed mid-write leaves one
    dest.start()
    try:
        with service_process(env) as second, second.client() as client:
            wait_until(lambda: len(dest.received) >= len(files), what="every result after the restart")
            wait_until(lambda: client.get("/v1/dicom/outbox").json()["counts"]["pending"] == 0, what="empty outbox")
            storescu(files[:2], host="127.0.0.1", port=port, called_ae=SCP_AE, calling_ae=MODALITY_AE)  # resent
            time.sleep(1.0)  # a duplicate result would be on its way by now (retries every 0.5 s at most)
            samples = metric_samples(client)
    finally:
        dest.stop()
    counts = dest.uid_counts()
    assert len(counts) == len(files) and set(counts.values()) == {1}  # each result received exactly once
    assert sorted(sr_source_uid(sr) for sr in dest.datasets()) == sources
    assert sample(samples, "serve_dicom_instances_duplicate_total") == 2
    assert list((outbox / "pending").iterdir()) == []


def test_a_result_the_destination_refuses_is_a_dead_letter_listed_on_the_outbox(models: Path, tmp_path: Path) -> None:
    with destination() as dest:
        dest.status = 0xA900  # "data set does not match SOP class": no retry can change that
        settings = dicom_settings(models, tmp_path / "outbox", dest.url)
        with running_server(settings) as server, server.client() as client:
            assert settings.dicom_port is not None
            path = with_new_uids(CHEST_JPEG, tmp_path / "in")
            storescu([path], host="127.0.0.1", port=settings.dicom_port, called_ae=SCP_AE, calling_ae=MODALITY_AE)
            wait_until(lambda: client.get("/v1/dicom/outbox").json()["counts"]["dead"] == 1, what="a dead letter")
            listed = client.get("/v1/dicom/outbox").json()
            samples = metric_samples(client)
    (dead,) = listed["dead"]
    assert dead["source_sop_instance_uid"] == path.stem and dead["attempts"] == 1
    assert dead["last_error"] == "status_0xa900" and dead["kind"] == "sr"
    assert listed["pending"] == [] and sample(samples, "serve_dicom_results_dead_total") == 1
    assert (tmp_path / "outbox" / "dead" / f"{dead['sop_instance_uid']}.dcm").is_file()
    assert len(dest.received) == 1  # tried once, not again


def test_a_destination_down_past_the_dead_letter_limit_gives_dead_letters(models: Path, tmp_path: Path) -> None:
    dest = Destination()  # never started
    settings = dicom_settings(models, tmp_path / "outbox", dest.url, dicom_dead_letter_after_s=1.0)
    with running_server(settings) as server, server.client() as client:
        assert settings.dicom_port is not None
        path = with_new_uids(CHEST_JPEG, tmp_path / "in")
        storescu([path], host="127.0.0.1", port=settings.dicom_port, called_ae=SCP_AE, calling_ae=MODALITY_AE)
        wait_until(lambda: client.get("/v1/dicom/outbox").json()["counts"]["dead"] == 1, what="a dead letter")
        (dead,) = client.get("/v1/dicom/outbox").json()["dead"]
    assert dead["attempts"] >= 2 and dead["last_error"] == "connection_failed"


def result(uid: str) -> Result:
    return Result(uid, "1.2.840.10008.5.1.4.1.1.88.33", "sr", b"\0" * 128 + b"DICM" + uid.encode())


def test_the_outbox_drops_what_a_crash_left_uncommitted_and_keeps_what_was_committed(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    outbox = Outbox(root)
    outbox.open()
    outbox.commit("1.2.3", [result("9.1"), result("9.2")])
    outbox.skip("1.2.4", "outside_intended_use", "DICOM attribute Modality CT is outside the model's use (CR)")
    outbox.hold("1.2.6", b"an accepted instance, not run yet")
    outbox.hold("1.2.3", b"run and committed; the crash came before its inbox copy went")
    outbox.close()
    (root / "pending" / "9.9.dcm").write_bytes(b"written before a crash; its instance never committed")
    (root / "pending" / "9.8.json").write_text("{}")  # the state of a sent result (its .dcm went first)
    reopened = Outbox(root)
    reopened.open()
    assert reopened.depth == 2 and {i.uid for i in reopened.due(time.time(), 10)} == {"9.1", "9.2"}
    assert sorted(p.name for p in (root / "pending").iterdir()) == ["9.1.dcm", "9.2.dcm"]
    assert reopened.inbox_uids() == ["1.2.6"] and reopened.read_inbox("1.2.6") is not None
    skipped = reopened.seen("1.2.4")
    assert skipped is not None and skipped.state == "skipped" and skipped.reason == "outside_intended_use"
    inferred = reopened.seen("1.2.3")
    assert inferred is not None and inferred.results == ("9.1", "9.2")
    queued = reopened.seen("1.2.6")
    assert queued is not None and queued.state == "queued"
    assert reopened.seen("1.2.5") is None
    assert root.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o077 == 0 for folder in ("pending", "inbox") for p in (root / folder).iterdir())
    reopened.close()


def test_a_dead_letter_moved_back_to_pending_is_sent_again_after_a_restart(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    outbox = Outbox(root)
    outbox.open()
    outbox.commit("1.2.3", [result("9.1")])
    (item,) = outbox.due(time.time(), 10)
    assert outbox.mark_failed(item, "status_0xa900", permanent=True)
    outbox.close()
    for path in (root / "dead").iterdir():  # the documented way to retry a dead letter, service stopped
        path.rename(root / "pending" / path.name)
    reopened = Outbox(root)
    reopened.open()
    (again,) = reopened.due(time.time() + 60, 10)  # due once its recorded backoff (at most the cap) has passed
    assert again.uid == "9.1" and again.attempts == 1 and reopened.dead_count == 0
    reopened.close()


def test_retries_back_off_exponentially_up_to_the_cap(tmp_path: Path) -> None:
    backoff = Backoff(base_s=1.0, cap_s=30.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    outbox = Outbox(tmp_path / "outbox", backoff)
    outbox.open()
    outbox.commit("1.2.3", [result("9.1")])
    (item,) = outbox.due(time.time(), 10)
    before = time.time()
    assert not outbox.mark_failed(item, "connection_failed")
    assert outbox.due(time.time(), 10) == []  # not due again for a second
    (waiting,) = outbox.due(before + 1.5, 10)
    assert waiting.attempts == 1 and waiting.last_error == "connection_failed"
    outbox.close()
    reopened = Outbox(tmp_path / "outbox", backoff)
    reopened.open()  # the attempt count and the next attempt's time survive a restart
    (again,) = reopened.due(before + 1.5, 10)
    assert again.attempts == 1 and reopened.due(before, 10) == []


def test_a_destination_taking_only_implicit_vr_gets_the_results_converted(models: Path, tmp_path: Path) -> None:
    dest = Destination(syntaxes=(ImplicitVRLittleEndian,)).start()
    try:
        settings = dicom_settings(models, tmp_path / "outbox", dest.url)
        with running_server(settings):
            assert settings.dicom_port is not None
            path = with_new_uids(CHEST_JPEG, tmp_path / "in")
            storescu([path], host="127.0.0.1", port=settings.dicom_port, called_ae=SCP_AE, calling_ae=MODALITY_AE)
            wait_until(lambda: len(dest.received) == 1, what="the converted SR")
    finally:
        dest.stop()
    (sr,) = dest.datasets()
    assert sr.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian and sr_source_uid(sr) == path.stem
