"""Per-request context: the request id, the error-body style, and the fields of the one access-log line.

`RequestContextMiddleware` is the outermost middleware. It takes a valid `X-Request-ID` from the client
or makes one, puts it on every response, and keeps it in a context variable that the log formatter and
the error bodies read. Routes add what only they know (model, batch size) with `annotate(...)`. When the
response is done it writes one access-log line: route template (never the raw path), status, body sizes
and duration. An exception that escapes the app is logged here and answered with a JSON 500 carrying the
request id, instead of Starlette's plain-text one.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import route_label

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_LENGTH = 128
# Letters, digits and the separators that UUIDs, trace ids and ULIDs use: nothing a log or header could misread.
_REQUEST_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_REQUEST_ID_LENGTH}}}")

access_logger = logging.getLogger("service.access")
logger = logging.getLogger(__name__)


@dataclass
class RequestContext:
    request_id: str
    oip: bool  # an Open Inference Protocol path: error bodies use its {"error": ...} form
    fields: dict[str, Any] = field(default_factory=dict)


_current: ContextVar[RequestContext | None] = ContextVar("request_context", default=None)


def current() -> RequestContext | None:
    """The context of the request this code runs for, or None outside a request (start-up, worker thread)."""
    return _current.get()


def current_request_id() -> str | None:
    context = _current.get()
    return context.request_id if context else None


def annotate(**fields: str | int | float | None) -> None:
    """Add fields (model, version, batch_size, images, ...) to this request's access-log line."""
    context = _current.get()
    if context is not None:
        context.fields.update(fields)


def request_id_from(headers: Headers) -> str:
    """The client's `X-Request-ID` when it is safe to echo (bounded length, safe charset), else a new one."""
    offered = headers.get(REQUEST_ID_HEADER)
    if offered is not None and _REQUEST_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


def is_oip_path(path: str) -> bool:
    return path == "/v2" or path.startswith("/v2/")


class RequestContextMiddleware:
    """Pure ASGI: request id in, request id out, one JSON access-log line per HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        context = RequestContext(request_id_from(Headers(scope=scope)), is_oip_path(scope["path"]))
        token = _current.set(context)
        started = time.perf_counter()
        status = 500
        response_started = False
        request_bytes = 0
        response_bytes = 0

        async def counting_receive() -> Message:
            nonlocal request_bytes
            message = await receive()
            if message["type"] == "http.request":
                request_bytes += len(message.get("body", b""))
            return message

        async def tagging_send(message: Message) -> None:
            nonlocal status, response_started, response_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = context.request_id
            elif message["type"] == "http.response.body":
                response_bytes += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, tagging_send)
        except Exception:
            logger.exception("unhandled error while serving the request")
            if not response_started:
                from service.errors import error_response  # errors reads this module's context

                response = error_response(500, "internal_error", "the server hit an unexpected error")
                await response(scope, receive, tagging_send)
        finally:
            access_logger.info(
                "request",
                extra={
                    "route": route_label(scope),
                    "method": scope["method"],
                    "status": status,
                    "request_bytes": request_bytes,
                    "response_bytes": response_bytes,
                    "duration_ms": round((time.perf_counter() - started) * 1e3, 3),
                    **context.fields,
                },
            )
            _current.reset(token)
