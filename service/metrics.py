"""Prometheus metrics, one registry per app so several apps can live in one process."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
UNMATCHED_ROUTE = "unmatched"


class ServiceMetrics:
    """The service's instruments and the registry that renders them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "serve_requests", "HTTP requests by route and status", ["route", "status"], registry=self.registry
        )
        self.request_latency = Histogram(
            "serve_request_latency_seconds", "HTTP request latency", ["route"], registry=self.registry
        )
        self.preprocess = Histogram(
            "serve_preprocess_seconds", "Decode and preprocess time per image", registry=self.registry
        )
        self.queue_wait = Histogram(
            "serve_queue_wait_seconds", "Time an image waited for its batch to start", registry=self.registry
        )
        self.inference = Histogram(
            "serve_inference_seconds", "onnxruntime time per batch", registry=self.registry
        )
        self.batch_size = Histogram(
            "serve_batch_size", "Images per onnxruntime call", buckets=BATCH_SIZE_BUCKETS, registry=self.registry
        )
        self.queue_depth = Gauge("serve_queue_depth", "Images waiting for the model", registry=self.registry)
        self.model_info = Info("serve_model", "The model being served", registry=self.registry)

    def observe_batch(self, size: int, inference_s: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(inference_s)

    def track_queue_depth(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """Pure ASGI: count every HTTP request by route template and status, and time it."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app raises before responding
        started = time.perf_counter()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            # The router records the matched route in the scope; its template keeps label cardinality bounded.
            route = getattr(scope.get("route"), "path", UNMATCHED_ROUTE)
            self.metrics.request_latency.labels(route).observe(time.perf_counter() - started)
            self.metrics.requests.labels(route, str(status)).inc()

