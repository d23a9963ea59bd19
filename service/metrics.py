"""Prometheus metrics, one registry per app so several apps can live in one process."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
DECODE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
UNMATCHED_ROUTE = "unmatched"
# Why work was refused before it reached the model (`serve_rejections_total{reason}`); all start at 0.
REJECTION_REASONS = (
    "queue_full",  # the batcher's queue is at SERVE_QUEUE_LIMIT
    "overloaded",  # admission: SERVE_MAX_PENDING requests are already being read, decoded or queued
    "deadline_exceeded",  # still queued when SERVE_DEADLINE_MS passed (the error code of the answer, too)
    "not_ready",  # warming up
    "shutting_down",  # draining after SIGTERM
    "body_too_large",
    "unauthorized",  # no API key
    "forbidden",  # a wrong API key
)


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
        self.in_flight = Gauge("serve_in_flight", "HTTP requests being served now", registry=self.registry)
        self.preprocess = Histogram(
            "serve_preprocess_seconds", "Decode and preprocess time per image", registry=self.registry
        )
        self.decode = Histogram(
            "serve_decode_seconds",
            "Time a decode thread spent turning one upload into the model's input tensor",
            buckets=DECODE_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "serve_queue_wait_seconds", "Time an image waited for its batch to start", registry=self.registry
        )
        self.inference = Histogram(
            "serve_inference_seconds",
            "onnxruntime time per batch, by model",
            ["name", "version"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "serve_batch_size", "Images per onnxruntime call", buckets=BATCH_SIZE_BUCKETS, registry=self.registry
        )
        self.queue_depth = Gauge("serve_queue_depth", "Images waiting for the model", registry=self.registry)
        self.rejections = Counter(
            "serve_rejections", "Requests refused before inference, by reason", ["reason"], registry=self.registry
        )
        for reason in REJECTION_REASONS:
            self.rejections.labels(reason)
        self.model_info = Gauge(
            "serve_model_info",
            "1 for each model being served",
            ["name", "version", "provider", "variant"],
            registry=self.registry,
        )

        self.ood_checked = Counter(
            "serve_ood_checked",
            "Images whose out-of-distribution score was computed, by model",
            ["name", "version"],
            registry=self.registry,
        )
        self.ood_flagged = Counter(
            "serve_out_of_distribution",
            "Images flagged out-of-distribution (ood_score above the record's threshold), by model",
            ["name", "version"],
            registry=self.registry,
        )

    def observe_ood(self, name: str, version: str, flagged: bool | None) -> None:
        """Count one answered image of a model with an out-of-distribution check (None: no check, not counted)."""
        if flagged is None:
            return
        self.ood_checked.labels(name, version).inc()
        if flagged:
            self.ood_flagged.labels(name, version).inc()

    def start_ood_counts(self, name: str, version: str) -> None:
        """Show a model's two counters at 0 from the start, so a rate over them exists before the first flag."""
        self.ood_checked.labels(name, version)
        self.ood_flagged.labels(name, version)

    def observe_batch(self, name: str, version: str, size: int, inference_s: float) -> None:
        """One model call of the model `name` `version` (bound per model by the registry)."""
        self.batch_size.observe(size)
        self.inference.labels(name, version).observe(inference_s)

    def observe_decode(self, seconds: float) -> None:
        self.decode.observe(seconds)

    def reject(self, reason: str) -> None:
        """Count one refusal; `reason` comes from the code (REJECTION_REASONS), never from the client."""
        self.rejections.labels(reason).inc()

    def set_model_info(self, *, name: str, version: str, provider: str, variant: str) -> None:
        self.model_info.labels(name, version, provider, variant).set(1)

    def track_queue_depth(self, depth: Callable[[], int]) -> None:
        self.queue_depth.set_function(depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_label(scope: Scope) -> str:
    """The matched route's template: bounded, whatever path the client sent.

    The router stores the route in the scope. A request refused by a middleware before routing
    (401, 413, 503) is matched here against the app's route templates, so it keeps its route's label.
    """
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", UNMATCHED_ROUTE))
    app = scope.get("app")
    if app is None:
        return UNMATCHED_ROUTE
    method = scope.get("method", "GET")
    for template, pattern, methods in _route_table(app):
        if pattern.match(scope["path"]) and (not methods or method in methods):
            return template
    return UNMATCHED_ROUTE


def _route_table(app: Any) -> list[tuple[str, re.Pattern[str], frozenset[str]]]:
    """(template, compiled pattern, methods) for every HTTP route of `app`, built once per app."""
    table: list[tuple[str, re.Pattern[str], frozenset[str]]] | None = getattr(app.state, "route_table", None)
    if table is None:
        table = []
        for entry in _flat_routes(app.routes):
            template = getattr(entry, "path_format", None) or getattr(entry, "path", None)
            if isinstance(template, str) and template.startswith("/"):
                pattern, _, _ = compile_path(template)
                table.append((template, pattern, frozenset(getattr(entry, "methods", None) or ())))
        app.state.route_table = table
    return table


def _flat_routes(routes: Any) -> list[Any]:
    try:  # FastAPI >= 0.160 keeps included routers as nested entries; this lists their routes
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return list(routes)
    return list(iter_route_contexts(routes))


class RequestMetricsMiddleware:
    """Pure ASGI: count every HTTP request by route template and status, time it, and gauge those in flight."""

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

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.in_flight.dec()
            route = route_label(scope)
            self.metrics.request_latency.labels(route).observe(time.perf_counter() - started)
            self.metrics.requests.labels(route, str(status)).inc()
