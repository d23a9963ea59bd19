"""The DICOM node's Prometheus instruments, in the service's registry. Labels come from code, never from data."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from service.dicom.choosing import SKIP_REASONS

WAYS_IN = ("dimse", "dicomweb")


class DicomMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.received = Counter(
            "serve_dicom_instances_received", "DICOM instances received, by way in", ["via"], registry=registry
        )
        self.skipped = Counter(
            "serve_dicom_instances_skipped", "Instances recorded as skipped, by reason", ["reason"], registry=registry
        )
        self.duplicates = Counter(
            "serve_dicom_instances_duplicate",
            "Instances received again (already inferred or skipped)",
            registry=registry,
        )
        self.inferred = Counter("serve_dicom_instances_inferred", "Instances inferred", registry=registry)
        self.refused = Counter(
            "serve_dicom_instances_refused",
            "Instances refused with no result, by error code",
            ["code"],
            registry=registry,
        )
        self.sent = Counter("serve_dicom_results_sent", "Result objects the destination accepted", registry=registry)
        self.send_failures = Counter(
            "serve_dicom_send_failures", "Failed attempts to send a result object", registry=registry
        )
        self.dead = Counter("serve_dicom_results_dead", "Result objects moved to dead letters", registry=registry)
        self.associations = Counter(
            "serve_dicom_associations", "DICOM associations requested, by outcome", ["outcome"], registry=registry
        )
        self.inbox_depth = Gauge(
            "serve_dicom_inbox_depth", "C-STORE instances accepted and not yet run through the model", registry=registry
        )
        self.outbox_depth = Gauge("serve_dicom_outbox_depth", "Result objects waiting to be sent", registry=registry)
        self.outbox_dead = Gauge("serve_dicom_outbox_dead", "Dead letters in the outbox", registry=registry)
        self.outbox_oldest = Gauge(
            "serve_dicom_outbox_oldest_age_seconds", "Age of the oldest result waiting to be sent", registry=registry
        )
        for via in WAYS_IN:
            self.received.labels(via)
        for reason in SKIP_REASONS:
            self.skipped.labels(reason)
        for outcome in ("accepted", "rejected_caller", "rejected_busy"):
            self.associations.labels(outcome)

    def track_outbox(self, depth: Callable[[], int], dead: Callable[[], int], oldest: Callable[[], float]) -> None:
        self.outbox_depth.set_function(depth)
        self.outbox_dead.set_function(dead)
        self.outbox_oldest.set_function(oldest)
