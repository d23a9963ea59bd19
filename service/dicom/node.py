"""`DicomNode.receive`: one received instance through choosing, the model, writing and the outbox.

Both ways in (the C-STORE SCP and STOW-RS) call `receive` on the event loop with the instance's Part-10 bytes;
the model runs through the SAME `ServedModel.infer_bytes` as `/predict` (decode pool, decode budget, intended-use
gate, batcher), so one instance gets the probabilities `/predict` gives the same file. What happened comes back
as a `Receipt`: inferred (its results are durably in the outbox), duplicate (already inferred or skipped:
nothing runs again), skipped (with its reason) or refused (no result; `transient` when a retry may succeed).
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from pydicom.dataset import Dataset

from medcore.decision import decide
from medcore.imaging import ImageError, OutsideIntendedUseError
from medcore.imaging.dicom import read_dicom
from service.admission import Admission
from service.batching import BatchError, DeadlineExceededError, NotReadyError, QueueFullError
from service.dicom.choosing import Identity, Skip, choose, identify
from service.dicom.metrics import DicomMetrics
from service.dicom.outbox import Outbox, Result
from service.dicom.sr import Outcome, build_sr
from service.registry import ServedModel

logger = logging.getLogger(__name__)

_TRANSIENT = {QueueFullError: "queue_full", NotReadyError: "not_ready", DeadlineExceededError: "deadline_exceeded"}


@dataclass(frozen=True)
class Receipt:
    """What the node did with one instance; `code` and `detail` never quote a header value."""

    verdict: str  # "inferred", "duplicate", "skipped" or "refused"
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    code: str = ""
    detail: str = ""
    transient: bool = False

    @property
    def accepted(self) -> bool:
        return self.verdict != "refused"


class DicomNode:
    """The pipeline and its state: the routed model, the outbox, the in-progress set."""

    def __init__(
        self,
        served: ServedModel,
        outbox: Outbox,
        admission: Admission,
        metrics: DicomMetrics,
        *,
        heatmap_sc: bool = False,
    ) -> None:
        self.served = served
        self.outbox = outbox
        self.admission = admission
        self.metrics = metrics
        self.heatmap_sc = heatmap_sc
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dicom-outbox")  # serial, fsynced writes
        self._in_progress: dict[str, asyncio.Future[None]] = {}
        self.on_commit: Callable[[], None] | None = None  # wakes the delivery worker

    @property
    def draining(self) -> bool:
        return self.admission.draining

    async def receive(self, data: bytes, via: str, *, admitted: bool = False, study: str | None = None) -> Receipt:
        """Run one instance (`admitted`: its request already holds an admission slot, as STOW-RS requests do)."""
        self.metrics.received.labels(via).inc()
        if not admitted:
            refusal = self.admission.refusal()
            if refusal is not None:
                return self._refused(Receipt("refused", code=refusal[0], detail=refusal[1], transient=True))
            self.admission.in_flight += 1
        try:
            return await self._receive(data, study)
        finally:
            if not admitted:
                self.admission.in_flight -= 1

    async def _receive(self, data: bytes, study: str | None) -> Receipt:
        loop = asyncio.get_running_loop()
        max_bytes = self.served.max_bytes
        try:
            header = await loop.run_in_executor(self.served.decoder, partial(_header, data, max_bytes))
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
        done: asyncio.Future[None] = loop.create_future()
        self._in_progress[uid] = done
        try:
            return await self._run(header, identity, data)
        finally:
            del self._in_progress[uid]
            done.set_result(None)

    async def _run(self, header: Dataset, identity: Identity, data: bytes) -> Receipt:
        loop = asyncio.get_running_loop()
        served = self.served
        skip = choose(header, served)
        if skip is None:
            try:
                done = await served.infer_bytes(data, explain=self.heatmap_sc)
            except OutsideIntendedUseError as exc:
                skip = Skip("outside_intended_use", str(exc))
            except ImageError as exc:  # an image header whose pixels cannot be read: damaged, no result
                return self._refused(Receipt("refused", *_uids(identity), code=exc.code, detail=str(exc)))
            except (QueueFullError, NotReadyError, DeadlineExceededError) as exc:
                code = _TRANSIENT[type(exc)]
                return self._refused(Receipt("refused", *_uids(identity), code, str(exc), transient=True))
            except BatchError as exc:
                return self._refused(Receipt("refused", *_uids(identity), "inference_failed", str(exc), True))
        if skip is not None:
            await loop.run_in_executor(
                self.writer, self.outbox.skip, identity.sop_instance_uid, skip.reason, skip.detail
            )
            self.metrics.skipped.labels(skip.reason).inc()
            return Receipt("skipped", *_uids(identity), code=skip.reason, detail=skip.detail)
        result = done.result
        (decisions,) = decide(result.probabilities[None, :], served.record)
        outcome = Outcome(
            decisions,
            ood_score=_optional_float(getattr(result, "ood_score", None)),
            out_of_distribution=_optional_bool(getattr(result, "out_of_distribution", None)),
        )
        results = [await loop.run_in_executor(self.writer, self._sr, header, outcome)]
        if self.heatmap_sc and result.heatmaps is not None:
            from service.dicom.secondary_capture import build_secondary_capture

            sc = partial(build_secondary_capture, data, header, served, outcome, result.heatmaps, datetime.now())
            results.append(_encode(await loop.run_in_executor(served.decoder, sc), "sc"))
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

    def close(self) -> None:
        self.writer.shutdown(wait=True)


def _header(data: bytes, max_bytes: int) -> Dataset:
    """The instance's header (up to the pixel data); damaged or non-DICOM bytes raise `ImageError`."""
    return read_dicom(data, max_bytes=max_bytes, stop_before_pixels=True)


def _uids(identity: Identity) -> tuple[str, str]:
    return identity.sop_class_uid, identity.sop_instance_uid


def _encode(dataset: Dataset, kind: str) -> Result:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return Result(str(dataset.SOPInstanceUID), str(dataset.SOPClassUID), kind, buffer.getvalue())


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _optional_bool(value: object) -> bool | None:
    return None if value is None else bool(value)
