"""Graceful shutdown on SIGTERM: stop admitting work, let what is in flight finish, then let uvicorn exit.

uvicorn alone would stop accepting connections at once and wait without bound. Instead, on the first
SIGTERM readiness turns false and new inference requests get 503 `shutting_down` (so a load balancer
moves traffic away), the requests already admitted drain for up to `timeout_s`, and only then is
uvicorn's own handler called, which closes the server and runs the lifespan shutdown. A second
SIGTERM skips the wait. Signals can only be caught on the main thread; elsewhere (a server in a test
thread) `install` does nothing and `begin` can be called directly.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from types import FrameType
from typing import Any

from service.admission import Admission

logger = logging.getLogger(__name__)


class Drain:
    def __init__(self, admission: Admission, timeout_s: float) -> None:
        self.admission = admission
        self.timeout_s = timeout_s
        self._previous: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._installed = False

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Take over SIGTERM (keeping the handler found there, normally uvicorn's, to call when drained)."""
        if threading.current_thread() is not threading.main_thread():
            return
        self._loop = loop
        self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if self.admission.draining or self._loop is None:
            self._hand_over(sig, frame)  # second signal: exit now
            return
        self._loop.call_soon_threadsafe(self._start, sig, frame)

    def _start(self, sig: int, frame: FrameType | None) -> None:
        self.begin()
        self._task = asyncio.ensure_future(self._finish(sig, frame))

    def begin(self) -> None:
        """Readiness false, new inference requests 503 from now on."""
        if not self.admission.draining:
            logger.info("draining: %d requests in flight, up to %.1f s", self.admission.in_flight, self.timeout_s)
        self.admission.draining = True

    async def wait(self) -> bool:
        """Until no admitted request is left or the timeout passes; True when everything drained."""
        deadline = time.monotonic() + self.timeout_s
        while self.admission.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.admission.in_flight == 0

    async def _finish(self, sig: int, frame: FrameType | None) -> None:
        drained = await self.wait()
        if not drained:
            logger.warning("drain timed out with %d requests still in flight", self.admission.in_flight)
        self._hand_over(sig, frame)

    def _hand_over(self, sig: int, frame: FrameType | None) -> None:
        previous = self._previous
        if callable(previous):
            previous(sig, frame)
        else:  # nobody else handles SIGTERM: die of it, as the default would
            self.uninstall()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(sig)
