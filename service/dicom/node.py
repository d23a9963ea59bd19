"""`DicomNode`: a received instance through screening, the model, writing and the outbox.

Screening (both ways in, before anything is promised): the data set is parsed whole (no pixel decoding), its UIDs
checked, duplicates answered from the outbox's records (idempotent by SOP Instance UID), `choosing` decides whether
it runs (a skip is recorded with its reason), and an image's header goes through the decode budget and the
transfer-syntax check. What fails screening is refused with no result.

Then the model runs through the SAME `ServedModel.infer_bytes` as `/predict` (decode pool, decode budget,
intended-use gate, batcher), so an instance gets the probabilities `/predict` gives the same file, and its results
are committed to the outbox. STOW-RS (`receive`) does this within the request, so its answer says what happened.
C-STORE (`accept`) answers as soon as the instance is durably in the outbox's inbox, and the inbox is worked off
in the background (`process`): a modality's association is not held up by inference, receiving and inferring
overlap, and what is in the inbox when the service stops or dies is processed after the restart. An instance that
fails in the background with a damaged image is recorded as failed (no result); one that meets a full queue or a
warming model is retried after `RETRY_AFTER_S`.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from pydicom.dataset import Dataset

from medcore.decision import decide
from medcore.imaging import ImageError, OutsideIntendedUseError
from medcore.imaging.dicom import check_dicom_size, read_dicom
from service.admission import Admission
from service.batching import BatchError, DeadlineExceededError, NotReadyError, QueueFullError
from service.dicom.choosing import Identity, Skip, choose, identify
from service.dicom.metrics import DicomMetrics
from service.dicom.outbox import Outbox, Result
from service.dicom.sr import Outcome, build_sr
from service.ood import assess
from service.registry import ServedModel

logger = logging.getLogger(__name__)

_TRANSIENT = {QueueFullError: "queue_full", NotReadyError: "not_ready", DeadlineExceededError: "deadline_exceeded"}
RETRY_AFTER_S = 1.0  # an inbox instance that met a full queue or a warming model is tried again after this
INBOX_CONCURRENCY = 8  # inbox instances decoded or queued at once (enough to fill batches, not to flood the queue)


@dataclass(frozen=True)
class Receipt:
    """What the node did with one instance; `code` and `detail` never quote a header value."""

    verdict: str  # "inferred", "queued" (C-STORE: in the inbox), "duplicate", "skipped" or "refused"
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    code: str = ""
    detail: str = ""
    transient: bool = False

    @property
    def accepted(self) -> bool:
        return self.verdict != "refused"


@dataclass(frozen=True)
class _Screened:
    header: Dataset
    identity: Identity


class DicomNode:
    """The pipeline and its state: the routed model, the outbox, the in-progress set, the background work."""

    def __init__(
        self,
        served: ServedModel,
        outbox: Outbox,
        admission: Admission,
        metrics: DicomMetrics,
        *,
        heatmap_sc: bool,
        max_inbox: int = 10000,
    ) -> None:
        self.served = served
        self.outbox = outbox
        self.admission = admission
        self.metrics = metrics
        self.heatmap_sc = heatmap_sc
        self.max_inbox = max_inbox
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dicom-outbox")  # serial, fsynced writes
        self.on_commit: Callable[[], None] | None = None  # wakes the delivery worker
        self._in_progress: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(INBOX_CONCURRENCY)
        self._stopping = False

    @property
    def draining(self) -> bool:
        return self.admission.draining or self._stopping

    async def receive(self, data: bytes, via: str, *, study: str | None = None) -> Receipt:
        """STOW-RS: screen and run one instance within the request (which holds the admission slot)."""
        self.metrics.received.labels(via).inc()
        screened = await self._screen(data, study)
        if isinstance(screened, Receipt):
            return screened
        return await self._exclusively(screened.identity, partial(self._run, screened, data))

    async def accept(self, data: bytes) -> Receipt:
        """C-STORE: screen one instance and put it in the inbox; `process` runs it in the background."""
        self.metrics.received.labels("dimse").inc()
        if self.draining:
            detail = "the node is stopping"
            return self._refused(Receipt("refused", code="shutting_down", detail=detail, transient=True))
        if self.outbox.inbox_depth >= self.max_inbox:
            detail = f"{self.max_inbox} received instances are waiting for the model (SERVE_DICOM_MAX_INBOX)"
            return self._refused(Receipt("refused", code="overloaded", detail=detail, transient=True))
        screened = await self._screen(data, None)
        if isinstance(screened, Receipt):
            return screened
        uid = screened.identity.sop_instance_uid

        async def hold() -> Receipt:
            await asyncio.get_running_loop().run_in_executor(self.writer, self.outbox.hold, uid, data)
            self._schedule(uid)
            return Receipt("queued", *_uids(screened.identity))

        return await self._exclusively(screened.identity, hold)

    def start(self) -> None:
        """Work off what the inbox held when the service last stopped."""
        for uid in self.outbox.inbox_uids():
            self._schedule(uid)

    async def stop(self, timeout_s: float) -> None:
        """Take nothing new from the inbox; let the instances being run finish (up to `timeout_s`)."""
        self._stopping = True
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in list(self._tasks):
            task.cancel()
        self.writer.shutdown(wait=True)

    def _schedule(self, uid: str, delay_s: float = 0.0) -> None:
        task = asyncio.create_task(self._process(uid, delay_s), name="dicom-inbox")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, uid: str, delay_s: float) -> None:
        """One inbox instance through the model; kept in the inbox for a retry when the failure is transient."""
        if delay_s:
            await asyncio.sleep(delay_s)
        async with self._slots:
            if not self._stopping:  # else it stays in the inbox for the next start
                await self._process_now(uid)

    async def _process_now(self, uid: str) -> None:
        loop = asyncio.get_running_loop()
        self.admission.in_flight += 1  # SIGTERM's drain waits for it, as for a request
        try:
            data = await loop.run_in_executor(self.writer, self.outbox.read_inbox, uid)
            if data is None:
                return
            try:
                header = await loop.run_in_executor(self.served.decoder, partial(_parse, data, self.served))
                receipt = await self._run(_Screened(header, identify(header)), data)
            except ImageError as exc:
                receipt = self._refused(Receipt("refused", code=exc.code, detail=str(exc)))
            if receipt.verdict == "refused" and receipt.transient:
                self._schedule(uid, RETRY_AFTER_S)
                return
            if receipt.verdict == "refused":
                await loop.run_in_executor(self.writer, self.outbox.fail, uid, receipt.code, receipt.detail)
            await loop.run_in_executor(self.writer, self.outbox.release, uid)
        except Exception:  # a bug must not lose the instance: it stays in the inbox for the next start
            logger.exception("an inbox instance could not be processed")
        finally:
            self.admission.in_flight -= 1

    async def _screen(self, data: bytes, study: str | None) -> _Screened | Receipt:
        loop = asyncio.get_running_loop()
        try:
            header = await loop.run_in_executor(self.served.decoder, partial(_parse, data, self.served))
            identity = identify(header)
        except ImageError as exc:
            return self._refused(Receipt("refused", code=exc.code, detail=str(exc)))
        if study is not None and str(header.get("StudyInstanceUID", "")) != study:
            detail = "the instance's StudyInstanceUID differs from the study in the request path"
            return self._refused(Receipt("refused", *_uids(identity), code="study_mismatch", detail=detail))
        uid = identity.sop_instance_uid
        while uid in self._in_progress:  # the same instance arrived twice at once: wait for the first
            await asyncio.shield(self._in_progress[uid])
        record = await loop.run_in_executor(self.writer, self.outbox.seen, uid)
        if record is not None:
            self.metrics.duplicates.inc()
            return Receipt("duplicate", *_uids(identity), code=record.reason, detail=record.detail)
        skip = choose(header, self.served)
        if skip is None and "Rows" in header:
            try:  # the decode budget and the decoder, from the header: refused now rather than failed later
                check_dicom_size(header, max_pixels=self.served.max_pixels, max_bytes=self.served.max_bytes)
            except ImageError as exc:
                return self._refused(Receipt("refused", *_uids(identity), code=exc.code, detail=str(exc)))
        if skip is not None:
            return await self._skip(identity, skip)
        return _Screened(header, identity)

    async def _exclusively(self, identity: Identity, work: Callable[[], Awaitable[Receipt]]) -> Receipt:
        """Run `work` with the instance marked in progress, so a twin arriving meanwhile waits and sees its record."""
        uid = identity.sop_instance_uid
        while uid in self._in_progress:
            await asyncio.shield(self._in_progress[uid])
        if self.outbox.known(uid):
            self.metrics.duplicates.inc()
            return Receipt("duplicate", *_uids(identity))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_progress[uid] = done
        try:
            return await work()
        finally:
            del self._in_progress[uid]
            done.set_result(None)

    async def _skip(self, identity: Identity, skip: Skip) -> Receipt:
        uid = identity.sop_instance_uid
        await asyncio.get_running_loop().run_in_executor(self.writer, self.outbox.skip, uid, skip.reason, skip.detail)
        self.metrics.skipped.labels(skip.reason).inc()
        return Receipt("skipped", *_uids(identity), code=skip.reason, detail=skip.detail)

    async def _run(self, screened: _Screened, data: bytes) -> Receipt:
        loop = asyncio.get_running_loop()
        served, identity = self.served, screened.identity
        try:
            done = await served.infer_bytes(data, explain=self.heatmap_sc)
        except OutsideIntendedUseError as exc:  # screening checked this already; the gate has the last word
            return await self._skip(identity, Skip("outside_intended_use", str(exc)))
        except ImageError as exc:  # the pixels cannot be read: damaged, no result
            return self._refused(Receipt("refused", *_uids(identity), code=exc.code, detail=str(exc)))
        except (QueueFullError, NotReadyError, DeadlineExceededError) as exc:
            code = _TRANSIENT[type(exc)]
            return self._refused(Receipt("refused", *_uids(identity), code, str(exc), transient=True))
        except BatchError as exc:
            return self._refused(Receipt("refused", *_uids(identity), "inference_failed", str(exc), True))
        result = done.result
        (decisions,) = decide(result.probabilities[None, :], served.record)
        ood = assess(served.record, result.ood_score)  # the one rule /predict applies too
        outcome = Outcome(decisions, ood_score=ood.score, out_of_distribution=ood.flagged, ood_warning=ood.warning)
        results = [await loop.run_in_executor(self.writer, self._sr, screened.header, outcome)]
        if self.heatmap_sc and result.heatmaps is not None:
            from service.dicom.secondary_capture import build_secondary_capture

            make = partial(build_secondary_capture, data, screened.header, served, outcome, result.heatmaps)
            results.append(_encode(await loop.run_in_executor(served.decoder, make, datetime.now()), "sc"))
        await loop.run_in_executor(self.writer, self.outbox.commit, identity.sop_instance_uid, results)
        self.metrics.inferred.inc()
        if self.on_commit is not None:
            self.on_commit()
        return Receipt("inferred", *_uids(identity))

    def _sr(self, header: Dataset, outcome: Outcome) -> Result:
        sr = build_sr(header, self.served.record, outcome, variant=self.served.variant, now=datetime.now())
        return _encode(sr, "sr")

    def _refused(self, receipt: Receipt) -> Receipt:
        self.metrics.refused.labels(receipt.code).inc()
        return receipt


def _parse(data: bytes, served: ServedModel) -> Dataset:
    """The whole data set, pixels left encoded; damaged, truncated or non-DICOM bytes raise `ImageError`."""
    return read_dicom(data, max_bytes=served.max_bytes)


def _uids(identity: Identity) -> tuple[str, str]:
    return identity.sop_class_uid, identity.sop_instance_uid


def _encode(dataset: Dataset, kind: str) -> Result:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return Result(str(dataset.SOPInstanceUID), str(dataset.SOPClassUID), kind, buffer.getvalue())
