"""Admission control: a bounded count of inference requests in the building, checked before the body is parsed.

A request to a predict or infer route takes a slot when its headers arrive and gives it back when its
response is sent, so the count covers bodies being read, images being decoded and images queued or in a
batch. Over `limit` (SERVE_MAX_PENDING), or while the service drains for shutdown, it is answered 503 with
`Retry-After` at once: nothing is decoded, and the body is only read to be dropped (`limits.discard_body`,
one chunk at a time, so the client still sending it gets the answer rather than a reset connection); so
overload cannot grow memory.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import RETRY_AFTER_S, error_response
from service.limits import discard_body

# POST routes that do inference work: /predict, /v1/models/{name}[/versions/{v}]/predict, the OIP infer, STOW-RS.
_VERSION = r"(/versions/[^/]+)?"
GUARDED_PATH = re.compile(
    rf"^/(predict|v1/models/[^/]+{_VERSION}/predict|v2/models/[^/]+{_VERSION}/infer|dicomweb/studies(/[^/]+)?)/?$"
)


class Admission:
    """The slot count and the draining flag; touched on the event loop thread only."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the admission limit must be >= 1, got {limit}")
        self.limit = limit
        self.in_flight = 0
        self.draining = False

    def refusal(self) -> tuple[str, str] | None:
        """(reason, detail) when a new request must be refused now, else None (reasons as in metrics)."""
        if self.draining:
            return "draining", "the service is shutting down; retry on another instance"
        if self.in_flight >= self.limit:
            return "overloaded", f"{self.limit} requests are already being served; retry shortly"
        return None


class AdmissionMiddleware:
    """Pure ASGI: take a slot for guarded routes or answer 503 before the app sees the request."""

    def __init__(
        self,
        app: ASGIApp,
        admission: Admission,
        on_reject: Callable[[str], None] | None = None,
        max_body_bytes: int = 20 * 1024 * 1024,
    ) -> None:
        self.app = app
        self.admission = admission
        self.on_reject = on_reject
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not GUARDED_PATH.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        refusal = self.admission.refusal()
        if refusal is not None:
            reason, detail = refusal
            if self.on_reject is not None:
                self.on_reject(reason)
            await discard_body(scope, receive, max_bytes=self.max_body_bytes)
            headers = {"Retry-After": str(RETRY_AFTER_S), "Connection": "close"}
            code = "shutting_down" if reason == "draining" else reason
            await error_response(503, code, detail, headers=headers)(scope, receive, send)
            return
        self.admission.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.in_flight -= 1
