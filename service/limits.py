"""Refuse request bodies over the limit before they are read into memory; drop a body before an early answer."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response


class _BodyTooLarge(Exception):
    """Raised into the app's body parsing to stop it reading further."""


class BodyLimitMiddleware:
    """Pure ASGI: 413 `body_too_large` when Content-Length, or the bytes actually streamed, exceed the limit.

    The app still routes the request (so metrics know the route), but its first read of the body
    fails at once when Content-Length is over the limit, and as soon as the streamed count passes it
    for chunked or lying clients. Whatever the app answers to that failed read is replaced by the 413.
    """

    def __init__(self, app: ASGIApp, limit_bytes: int) -> None:
        self.app = app
        self.limit = limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        declared_too_large = declared is not None and declared.isdigit() and int(declared) > self.limit
        received = 0
        tripped = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, tripped
            if declared_too_large:  # refuse before a single byte is read
                tripped = True
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    tripped = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if tripped:
                return  # the app's own error for the aborted parse; the 413 goes out instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not tripped:
                raise
        if tripped and not started:
            size = f"{declared} bytes" if declared_too_large else "longer than that"
            detail = f"the request body limit is {self.limit} bytes and this body is {size}"
            response = error_response(413, "body_too_large", detail, headers={"Connection": "close"})
            await response(scope, receive, send)


DISCARD_TIMEOUT_S = 2.0  # longest a refused request's body is read (and dropped) before its answer goes out


async def discard_body(scope: Scope, receive: Receive, *, max_bytes: int, timeout_s: float = DISCARD_TIMEOUT_S) -> None:
    """Read and drop the request body before an early answer (503 overloaded, 401, 403), within bounds.

    A server that answers and closes the connection with body bytes still unread makes the kernel reset
    it (TCP RST), and a client still sending its body then loses the answer. So the body is read and
    dropped first, chunk by chunk (memory stays at one chunk), unless it is declared larger than
    `max_bytes` (the body limit), and for at most `timeout_s`: a slow or stalled sender gets the answer then.
    A client that sent `Expect: 100-continue` has sent no body yet: it gets the answer at once, with no
    `100 Continue` that would invite the body.
    """
    headers = Headers(scope=scope)
    if headers.get("expect", "").lower() == "100-continue":
        return  # the client waits for a go-ahead before sending the body: nothing is in flight to drop
    declared = headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
        return
    read = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            while read <= max_bytes:
                message = await receive()
                if message["type"] != "http.request":
                    return
                read += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return
