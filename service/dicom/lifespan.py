"""Start and stop the DICOM node with the service: outbox, delivery worker, and the C-STORE SCP when a port is set."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from service.admission import Admission
from service.config import Settings
from service.dicom.addresses import parse_destination
from service.dicom.delivery import DeliveryWorker, make_sender
from service.dicom.metrics import DicomMetrics
from service.dicom.node import DicomNode
from service.dicom.outbox import Backoff, Outbox
from service.dicom.receiving import StoreSCP
from service.model import ModelLoadError
from service.registry import ModelRegistry, ServedModel

logger = logging.getLogger(__name__)


@dataclass
class DicomRuntime:
    node: DicomNode
    outbox: Outbox
    worker: DeliveryWorker
    scp: StoreSCP | None = None
    port: int | None = None  # where the SCP listens

    async def stop(self, timeout_s: float) -> None:
        """Stop taking associations, let those open finish (up to `timeout_s`), then stop sending."""
        if self.scp is not None:
            scp = self.scp
            await asyncio.to_thread(scp.stop_listening)
            deadline = time.monotonic() + timeout_s
            while scp.active_associations and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(scp.abort_all)
        await self.node.stop(timeout_s)
        await self.worker.stop(timeout_s)
        logger.info("DICOM node stopped: %d results pending in the outbox", self.outbox.depth)
        self.outbox.close()


def routed_model(settings: Settings, registry: ModelRegistry) -> ServedModel:
    """The model DICOM instances run on (`SERVE_DICOM_MODEL`, else the default), checked against the settings."""
    if settings.dicom_model:
        name, _, version = settings.dicom_model.partition("/")
        served = registry.get(name, version or None)
    else:
        served = registry.default
    if settings.dicom_heatmap_sc and not served.can_explain:
        raise ModelLoadError(
            f"SERVE_DICOM_HEATMAP_SC=true but model {served.name} {served.version} has no heatmaps output; "
            "export it with heatmaps or turn the Secondary Capture off"
        )
    return served


def check_dicom(settings: Settings, registry: ModelRegistry) -> None:
    """What `python -m service --check` verifies without starting the node (no port, no sending)."""
    routed_model(settings, registry)
    outbox = settings.dicom_outbox
    existing = next((p for p in (outbox, *outbox.parents) if p.exists()), Path("."))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ModelLoadError(f"SERVE_DICOM_OUTBOX {outbox} cannot be created or written by this user")


async def start_dicom(
    settings: Settings, registry: ModelRegistry, admission: Admission, metrics_registry: CollectorRegistry
) -> DicomRuntime:
    """The node on the routed model: outbox opened (and locked), delivery started, the SCP when a port is set."""
    assert settings.dicom_destination is not None
    served = routed_model(settings, registry)
    metrics = DicomMetrics(metrics_registry)
    backoff = Backoff(settings.dicom_retry_base_s, settings.dicom_retry_cap_s)
    outbox = Outbox(settings.dicom_outbox, backoff, settings.dicom_dead_letter_after_s)
    await asyncio.to_thread(outbox.open)
    try:
        return await _start(settings, served, outbox, admission, metrics)
    except BaseException:
        outbox.close()
        raise


async def _start(
    settings: Settings, served: ServedModel, outbox: Outbox, admission: Admission, metrics: DicomMetrics
) -> DicomRuntime:
    assert settings.dicom_destination is not None
    metrics.track_outbox(lambda: outbox.depth, lambda: outbox.dead_count, outbox.oldest_age_s)
    metrics.inbox_depth.set_function(lambda: outbox.inbox_depth)
    node = DicomNode(
        served, outbox, admission, metrics, heatmap_sc=settings.dicom_heatmap_sc, max_inbox=settings.dicom_max_inbox
    )
    destination = parse_destination(settings.dicom_destination)
    sender = make_sender(destination, settings.dicom_ae_title, settings.dicom_timeout_s, settings.dicom_max_pdu)
    worker = DeliveryWorker(outbox, sender, metrics)
    node.on_commit = worker.wake
    worker.start()
    runtime = DicomRuntime(node, outbox, worker)
    if settings.dicom_port is not None:
        try:
            runtime.scp = StoreSCP(settings, node, metrics)
            runtime.port = runtime.scp.start(asyncio.get_running_loop())
        except BaseException:  # the port is taken, say: stop sending before the start fails
            await worker.stop(1.0)
            await node.stop(1.0)
            raise
    node.start()
    logger.info(
        "DICOM node on model %s %s; results by %s; %d pending in the outbox",
        served.name, served.version, destination.describe(), outbox.depth,
    )  # fmt: skip
    return runtime
