"""The C-STORE SCP (with C-ECHO): who may associate, what is negotiated, and each instance to the node.

- Callers: the calling AE title and the peer's address must match an `SERVE_DICOM_ALLOWED_CALLERS` entry
  (`AET@host`, `AET@*`); others get A-ASSOCIATE-RJ (permanent, "calling AE title not recognised"). The called
  AE title must be ours (`SERVE_DICOM_AE_TITLE`). While the service drains, associations are rejected as
  transient (temporary congestion), and above `SERVE_DICOM_MAX_ASSOCIATIONS` as transient (local limit).
- Negotiation: every storage SOP class, each with exactly the transfer syntaxes `medcore.imaging` decodes
  with the decoders installed (`decodable_transfer_syntaxes`); a context proposing only others is rejected
  in the A-ASSOCIATE-AC ("transfer syntaxes not supported"), so nothing undecodable is ever sent.
- Limits: `SERVE_DICOM_MAX_PDU` (the largest P-DATA PDU we accept), `SERVE_DICOM_TIMEOUT_S` (ACSE, DIMSE and
  network timeouts); the decode budget (`SERVE_MAX_DECODE_BYTES`) applies to each instance as to an upload.
- C-STORE status: 0x0000 once the instance is durably in the outbox's inbox (it runs in the background), or is
  recorded as skipped, or was already received; 0xA700 (out of resources: retry later) when the node is stopping
  or `SERVE_DICOM_MAX_INBOX` instances already wait for the model; 0xC000 (cannot understand) for damaged data,
  a transfer syntax or a size it cannot decode. The Error Comment carries our reason code.
pynetdicom runs each association on its own thread; the handler hands the instance to the event loop and
waits for its receipt, so the model runs in the service's own batches.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from medcore.imaging.dicom import decodable_transfer_syntaxes
from service.config import Settings
from service.dicom.addresses import Caller, parse_callers
from service.dicom.metrics import DicomMetrics
from service.dicom.node import DicomNode, Receipt

logger = logging.getLogger(__name__)

SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000
RECEIPT_WAIT_S = 120.0  # longest a C-STORE waits for its instance's receipt before answering 0xA700


class AllowList:
    """The allowed callers with their hosts resolved once, at start."""

    def __init__(self, callers: tuple[Caller, ...]) -> None:
        self.entries = [(caller, caller.addresses()) for caller in callers]

    def __bool__(self) -> bool:
        return bool(self.entries)

    def allows(self, ae_title: str, address: str) -> bool:
        if not self.entries:
            return True
        title = ae_title.strip()
        return any(
            caller.ae_title == title and (caller.host == "*" or address in addresses)
            for caller, addresses in self.entries
        )


def status_of(receipt: Receipt) -> Dataset:
    """The C-STORE response status (and Error Comment) for a receipt."""
    status = Dataset()
    if receipt.accepted:
        status.Status = SUCCESS
        return status
    status.Status = OUT_OF_RESOURCES if receipt.transient else CANNOT_UNDERSTAND
    status.ErrorComment = f"{receipt.code}: {receipt.detail}"[:64]
    return status


class StoreSCP:
    """The AE and its server thread; `start` returns the port it listens on."""

    def __init__(self, settings: Settings, node: DicomNode, metrics: DicomMetrics) -> None:
        self.settings = settings
        self.node = node
        self.metrics = metrics
        self.callers = AllowList(parse_callers(settings.dicom_allowed_callers))
        self.ae = _make_ae(settings)
        self.server: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> int:
        self.loop = loop
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
        ]
        port = self.settings.dicom_port or 0
        self.server = self.ae.start_server((self.settings.host, port), block=False, evt_handlers=handlers)
        bound = int(self.server.server_address[1])
        if not self.callers:
            logger.warning("SERVE_DICOM_ALLOWED_CALLERS is empty: any calling AE may send to this node")
        logger.info(
            "DICOM C-STORE SCP %s listening on %s:%d (%d transfer syntaxes)",
            self.settings.dicom_ae_title, self.settings.host, bound, len(decodable_transfer_syntaxes()),
        )  # fmt: skip
        return bound

    @property
    def active_associations(self) -> int:
        return len(self.ae.active_associations)

    def stop_listening(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def abort_all(self) -> None:
        self.ae.shutdown()

    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(primitive.calling_ae_title) if primitive is not None else ""
        address = str(assoc.requestor.address)
        if self.node.draining:
            self.metrics.associations.labels("rejected_busy").inc()
            assoc.acse.send_reject(0x02, 0x03, 0x01)  # transient, presentation related, temporary congestion
            assoc.kill()
        elif not self.callers.allows(calling, address):
            self.metrics.associations.labels("rejected_caller").inc()
            # The calling AE title comes from the network, not from a DICOM data set; printable ASCII only.
            shown = "".join(c if 32 <= ord(c) < 127 else "?" for c in calling.strip())[:16]
            logger.warning("rejected an association from unknown caller %r at %s", shown, address)
            assoc.acse.send_reject(0x01, 0x01, 0x03)  # permanent, service user, calling AE title not recognised
            assoc.kill()
        else:
            self.metrics.associations.labels("accepted").inc()

    def _on_echo(self, event: evt.Event) -> int:
        return SUCCESS

    def _on_store(self, event: evt.Event) -> Dataset:
        assert self.loop is not None
        data = event.encoded_dataset(include_meta=True)
        future = asyncio.run_coroutine_threadsafe(self.node.accept(data), self.loop)
        try:
            receipt = future.result(timeout=RECEIPT_WAIT_S)
        except FutureTimeout:
            future.cancel()
            receipt = Receipt(
                "refused", code="timeout", detail="the instance was not processed in time", transient=True
            )
        except Exception:  # the loop is closing, or a bug: the modality retries, we log the type only
            logger.exception("a C-STORE could not be processed")
            receipt = Receipt("refused", code="internal_error", detail="the node failed; retry later", transient=True)
        return status_of(receipt)


def _make_ae(settings: Settings) -> AE:
    ae = AE(ae_title=settings.dicom_ae_title)
    ae.maximum_pdu_size = settings.dicom_max_pdu
    ae.maximum_associations = settings.dicom_max_associations
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.dicom_timeout_s
    ae.require_called_aet = True
    syntaxes = list(decodable_transfer_syntaxes())
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(context.abstract_syntax, syntaxes)
    ae.add_supported_context(Verification)
    return ae
