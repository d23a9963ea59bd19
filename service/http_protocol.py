"""uvicorn's httptools HTTP/1.1 protocol with a bound on the request head.

httptools (llhttp, in C) parses requests with far less CPU per request than h11, the pure-Python parser,
but uvicorn exposes a head limit for h11 only (`h11_max_incomplete_event_size`). This subclass adds it:
a request whose head (request line and headers) is still incomplete after `max_head_bytes` is answered
431 with the service's JSON error body and the connection is closed, so a client cannot grow the
server's memory by never ending its headers. Bytes of a head already complete (body, a pipelined next
request) never count against it.
"""

from __future__ import annotations

import json

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

HEAD_TOO_LARGE = 431


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that refuses a request head longer than `max_head_bytes` (set by `bounded_protocol`)."""

    max_head_bytes = 16 * 1024

    def __init__(self, config: Config, server_state: ServerState, *args: object, **kwargs: object) -> None:
        super().__init__(config, server_state, *args, **kwargs)  # type: ignore[arg-type]
        self._head_bytes = 0
        self._in_head = True  # a connection starts with a request head

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        was_in_head = self._in_head
        super().data_received(data)
        if not (was_in_head and self._in_head) or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > self.max_head_bytes:
            self._refuse_head()

    def _refuse_head(self) -> None:
        detail = f"the request head is over {self.max_head_bytes} bytes (SERVE_MAX_HEADER_BYTES)"
        body = json.dumps({"code": "header_too_large", "detail": detail, "request_id": None}).encode()
        head = (
            f"HTTP/1.1 {HEAD_TOO_LARGE} Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        ).encode("ascii")
        self.transport.write(head + body)
        self.transport.close()


def bounded_protocol(max_head_bytes: int) -> type[BoundedHttpToolsProtocol]:
    """The protocol class to give uvicorn as `http=`, refusing heads over `max_head_bytes`."""
    return type("BoundedHttpTools", (BoundedHttpToolsProtocol,), {"max_head_bytes": max_head_bytes})
