"""The service app's own CPU per request on the event-loop thread: where the 28-px model's c=8 gap comes from.

    .venv/bin/python bench/app_overhead.py [--requests 300] [--image X.png]

Calls the ASGI app directly (no uvicorn, no sockets: the app's lifespan, middlewares, routing, multipart
parsing, response) with the 0.5 MB multipart body of bench/serve.py in 64 KB chunks, one request at a time,
and prints `time.thread_time()` of the event-loop thread per request in three set-ups:
- the real model (decode and inference on the decode pool, as served);
- no model work: `infer_bytes` answers at once, so the same app code runs back to back, with warm caches;
- no model work, but each request first waits 20 ms on the decode pool (a sleep: no CPU, no GIL held), as a
  request waits for its image: the same code again, now with the caches gone cold between requests.
The first two differ by what the decode pool's hand-off costs the loop; the last two by cold caches alone.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from http_load import build_post
from serve import bench_image

from service.app import create_app
from service.batching import BatchResult
from service.config import BUNDLED_MODEL, Settings
from service.registry import BytesResult, ServedModel

CHUNK = 64 * 1024
WARMUP = 20


def asgi_request(image: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """The scope and body chunks of bench/serve.py's multipart POST /predict."""
    head, _, body = build_post("127.0.0.1", 8000, "/predict", image).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = [
        (name.strip().lower().encode(), value.strip().encode())
        for name, _, value in (line.partition(":") for line in lines)
    ]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/predict", "raw_path": b"/predict", "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    return scope, [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]


async def call(app: Callable[..., Awaitable[None]], scope: dict[str, Any], chunks: list[bytes]) -> None:
    sent: list[dict[str, Any]] = []
    pending = list(chunks)

    async def receive() -> dict[str, Any]:
        if pending:
            return {"type": "http.request", "body": pending.pop(0), "more_body": bool(pending)}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(dict(scope), receive, send)
    if sent[0]["status"] != 200:
        raise SystemExit(f"the app answered {sent[0]['status']}: {sent[1:]}")


async def cpu_per_request(image: bytes, requests: int, mode: str) -> float:
    """Event-loop thread CPU seconds per request; `mode`: "model", "none" or "wait"."""
    app = create_app(Settings(model_path=BUNDLED_MODEL))
    scope, chunks = asgi_request(image)
    original = ServedModel.infer_bytes
    answer = BytesResult(BatchResult(np.array([0.5], dtype=np.float32), 1, 0.0, 0.005), 0.02)

    async def no_model(self: ServedModel, data: bytes, **_: Any) -> BytesResult:
        if mode == "wait":
            await asyncio.get_running_loop().run_in_executor(self.decoder, time.sleep, 0.02)
        return answer

    async with app.router.lifespan_context(app):
        while not app.state.runtime.ready:
            await asyncio.sleep(0.05)
        for _ in range(WARMUP):
            await call(app, scope, chunks)
        if mode != "model":
            ServedModel.infer_bytes = no_model  # type: ignore[method-assign]
        try:
            started = time.thread_time()
            for _ in range(requests):
                await call(app, scope, chunks)
            return (time.thread_time() - started) / requests
        finally:
            ServedModel.infer_bytes = original  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--image", type=Path, help="default: bench/serve.py's 1024x1024 PNG")
    args = parser.parse_args()
    image = (args.image or bench_image()).read_bytes()
    print(f"event-loop thread CPU per POST /predict ({len(image)}-byte image, multipart, {args.requests} requests):")
    for mode, what in (
        ("model", "served (decode + inference on the decode pool)"),
        ("none", "no model work, back to back (warm caches)"),
        ("wait", "no model work, 20 ms wait per request on the decode pool (cold caches)"),
    ):
        seconds = asyncio.run(cpu_per_request(image, args.requests, mode))
        print(f"  {seconds * 1e3:6.2f} ms  {what}")


if __name__ == "__main__":
    main()
