"""Send the outbox to `SERVE_DICOM_DESTINATION`: C-STORE SCU (`dicom://AET@host:port`) or STOW-RS (`http(s)://`).

The worker is one asyncio task; each send runs on its own thread (pynetdicom and urllib block), a batch of
due results per association or request. Per result: accepted -> `Outbox.mark_sent`; refused for a reason a
retry cannot change (a C-STORE failure status 0xA9xx, 0xCxxx, 0x0122, 0x0124; a STOW-RS Failure Reason other
than 0xA7xx, or a 400/409/413/415 answer) -> dead letter at once; anything else (the destination down, an
association rejected, a timeout, 0xA7xx, HTTP 5xx/401/403/404/408/429) -> retried with the outbox's backoff.
Errors are recorded as stable codes (`connection_failed`, `status_0xa700`, `http_503`), never header values.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config

from service.dicom.addresses import Destination
from service.dicom.metrics import DicomMetrics
from service.dicom.outbox import Outbox, OutboxItem
from service.dicom.stow import encode_related, failed_uids

logger = logging.getLogger(__name__)

BATCH_SIZE = 16  # results per C-STORE round or STOW-RS request
IDLE_RELEASE_S = 5.0  # an association with nothing to send is released after this
RESULT_CLASSES = ("1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.7")  # Comprehensive SR, SC
IDLE_POLL_S = 1.0
WARNING_STATUSES = {0xB000, 0xB006, 0xB007}  # C-STORE warnings: stored (coerced / elements discarded)
PERMANENT_HTTP = {400, 409, 413, 415}


@dataclass(frozen=True)
class Sent:
    """The destination's answer for one result."""

    ok: bool
    error: str = ""
    permanent: bool = False


class Sender(Protocol):
    def send(self, batch: list[tuple[OutboxItem, Path]]) -> list[Sent]: ...

    def close_idle(self, *, force: bool = False) -> None: ...


class DimseSender:
    """C-STORE SCU over one association kept open between batches (released after `IDLE_RELEASE_S` idle).

    Each result SOP class is proposed twice, in Explicit VR Little Endian (how the outbox stores results: the
    file's bytes are sent as they are, with no parse or re-encode) and in Implicit VR Little Endian (the one
    every SCP accepts: the result is then converted on the way)."""

    def __init__(self, destination: Destination, ae_title: str, timeout_s: float, max_pdu: int) -> None:
        self.destination = destination
        self.max_pdu = max_pdu
        self.ae = AE(ae_title=ae_title)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = timeout_s
        self.ae.connection_timeout = timeout_s
        for sop_class in RESULT_CLASSES:
            self.ae.add_requested_context(sop_class, [ExplicitVRLittleEndian])
            self.ae.add_requested_context(sop_class, [ImplicitVRLittleEndian])
        self._assoc: Any = None
        self._last_used = 0.0

    def send(self, batch: list[tuple[OutboxItem, Path]]) -> list[Sent]:
        reused = self._assoc is not None and self._assoc.is_established
        answers = self._send(batch)
        if reused and answers and answers[0].error in ("association_lost", "no_response"):
            self.close_idle(force=True)  # the peer dropped the association while it was idle: reconnect once
            answers = self._send(batch)
        self._last_used = time.monotonic()
        return answers

    def _send(self, batch: list[tuple[OutboxItem, Path]]) -> list[Sent]:
        assoc = self._association()
        if not assoc.is_established:
            error = "association_rejected" if assoc.is_rejected else "connection_failed"
            self._assoc = None
            return [Sent(False, error) for _ in batch]
        answers = []
        for item, path in batch:
            if not assoc.is_established:
                break
            answers.append(_store(assoc, item.sop_class_uid, path))
        return answers + [Sent(False, "association_lost")] * (len(batch) - len(answers))

    def _association(self) -> Any:
        if self._assoc is None or not self._assoc.is_established:
            dest = self.destination
            self._assoc = self.ae.associate(dest.host, dest.port, ae_title=dest.ae_title, max_pdu=self.max_pdu)
        return self._assoc

    def close_idle(self, *, force: bool = False) -> None:
        """Release the association when it has been idle for `IDLE_RELEASE_S` (or now, with `force`)."""
        if self._assoc is None:
            return
        if force or not self._assoc.is_established or time.monotonic() - self._last_used > IDLE_RELEASE_S:
            if self._assoc.is_established:
                self._assoc.release()
            self._assoc = None


def _store(assoc: Any, sop_class: str, path: Path) -> Sent:
    try:
        status = _send_file(assoc, sop_class, path)
    except Exception as exc:  # a file that vanished, an association that broke: the type is enough
        return Sent(False, f"send_error_{type(exc).__name__}")
    code = getattr(status, "Status", None)
    if code is None:
        return Sent(False, "no_response")
    code = int(code)
    if code == 0 or code in WARNING_STATUSES:
        return Sent(True)
    permanent = (code & 0xF000) == 0xC000 or (code & 0xFF00) == 0xA900 or code in (0x0122, 0x0124)
    return Sent(False, f"status_0x{code:04x}", permanent)


def _send_file(assoc: Any, sop_class: str, path: Path) -> Any:
    """The file's own bytes when its syntax (explicit VR) was accepted for its class; else a parsed copy, converted."""
    explicit = any(
        cx.abstract_syntax == sop_class and cx.transfer_syntax[0] == ExplicitVRLittleEndian
        for cx in assoc.accepted_contexts
    )
    if not explicit:
        return assoc.send_c_store(dcmread(path))
    previous, _config.STORE_SEND_CHUNKED_DATASET = _config.STORE_SEND_CHUNKED_DATASET, True
    try:
        return assoc.send_c_store(path)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous


class StowSender:
    """STOW-RS: one POST of a batch to `<base>/studies`; URL credentials become HTTP Basic."""

    def __init__(self, destination: Destination, timeout_s: float) -> None:
        parts = urlsplit(destination.url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        self.url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/studies", "", ""))
        self.headers = {"Accept": "application/dicom+json"}
        if parts.username is not None:
            token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        self.timeout_s = timeout_s

    def close_idle(self, *, force: bool = False) -> None:
        return None  # urllib opens a connection per request

    def send(self, batch: list[tuple[OutboxItem, Path]]) -> list[Sent]:
        content_type, body = encode_related([path.read_bytes() for _, path in batch])
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={**self.headers, "Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                status, text = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read()
        except (OSError, ValueError) as exc:  # refused, reset, timed out, TLS
            return [Sent(False, f"connection_failed_{type(exc).__name__}") for _ in batch]
        if status not in (200, 202, 409):
            return [Sent(False, f"http_{status}", status in PERMANENT_HTTP) for _ in batch]
        failed = failed_uids(_json(text))
        answers = []
        for item, _ in batch:
            reason = failed.get(item.uid)
            if reason is not None:
                answers.append(Sent(False, f"failure_0x{reason:04x}", (reason & 0xFF00) != 0xA700))
            elif status == 409:  # nothing stored, and no reason given for this one
                answers.append(Sent(False, "http_409", True))
            else:
                answers.append(Sent(True))
        return answers


def _json(text: bytes) -> object:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def make_sender(destination: Destination, ae_title: str, timeout_s: float, max_pdu: int) -> Sender:
    if destination.is_dimse:
        return DimseSender(destination, ae_title, timeout_s, max_pdu)
    return StowSender(destination, timeout_s)


class DeliveryWorker:
    """The asyncio task that sends due results and records each answer in the outbox."""

    def __init__(self, outbox: Outbox, sender: Sender, metrics: DicomMetrics) -> None:
        self.outbox = outbox
        self.sender = sender
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dicom-send")
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="dicom-delivery")

    def wake(self) -> None:
        """Called when results were committed: send them now rather than at the next poll."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            batch = self.outbox.due(time.time(), BATCH_SIZE)
            if not batch:
                await loop.run_in_executor(self.executor, self.sender.close_idle)
                wait = self.outbox.next_due_in(time.time())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=min(IDLE_POLL_S, wait or IDLE_POLL_S))
                self._wake.clear()
                continue
            try:
                await loop.run_in_executor(self.executor, self._deliver, batch)
            except Exception:  # a bug in sending must not end delivery; the items stay pending
                logger.exception("a delivery round failed")
                await asyncio.sleep(IDLE_POLL_S)

    def _deliver(self, batch: list[OutboxItem]) -> None:
        answers = self.sender.send([(item, self.outbox.path(item)) for item in batch])
        for item, answer in zip(batch, answers, strict=True):
            if answer.ok:
                self.outbox.mark_sent(item)
                self.metrics.sent.inc()
                continue
            self.metrics.send_failures.inc()
            if self.outbox.mark_failed(item, answer.error, permanent=answer.permanent):
                self.metrics.dead.inc()

    async def stop(self, timeout_s: float) -> None:
        """Finish the send in progress (up to `timeout_s`), then stop; unsent results stay in the outbox."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            if not self._task.done():
                self._task.cancel()
        self.executor.submit(partial(self.sender.close_idle, force=True))
        self.executor.shutdown(wait=True, cancel_futures=False)
