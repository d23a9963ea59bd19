"""`kill -9` of a real `python -m service` under load, then a restart as a supervisor would do it.

The restarted process must become ready and answer correctly; clients of the killed one see
connection errors (nothing else can happen to a process killed by SIGKILL), never a wrong answer.
The time from the restart to ready is printed (`-s` shows it) and held to the stated goal (docs/reliability.md):
under 10 s. Measured 1.1 s alone on the 2-core machine; the goal itself is the margin for a shared one.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
from service_support import kermany_images, service_process

RESULT_KEYS = {"index", "predictions", "batch_size", "timings_ms"}
RESTART_GOAL_S = 10.0


def _hammer(url: str, image: bytes, stop: threading.Event, outcomes: list[str]) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        while not stop.is_set():
            try:
                response = client.post("/predict", files={"file": ("x.jpeg", image, "image/jpeg")})
            except httpx.HTTPError:
                outcomes.append("connection")
                continue
            if response.status_code == 200:
                result = response.json()["results"][0]
                outcomes.append("ok" if set(result) >= RESULT_KEYS else "malformed")
            else:
                outcomes.append(str(response.status_code))


def test_sigkill_under_load_then_restart_serves_again() -> None:
    (path,) = kermany_images(1)
    image = path.read_bytes()
    with service_process({}) as first:
        expected = first.client().post("/predict", files={"file": ("x.jpeg", image, "image/jpeg")}).json()
        stop = threading.Event()
        outcomes: list[str] = []
        clients = [threading.Thread(target=_hammer, args=(first.url, image, stop, outcomes)) for _ in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(2.0)
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        time.sleep(0.5)
        stop.set()
        for thread in clients:
            thread.join(20)
    assert first.process.returncode == -signal.SIGKILL
    assert "ok" in outcomes, "no request succeeded before the kill"
    assert not {o for o in outcomes if o not in ("ok", "connection", "503")}, sorted(set(outcomes))

    restarted_at = time.monotonic()
    with service_process({}) as second:
        ready_s = time.monotonic() - restarted_at
        print(f"\nrestart to ready: {ready_s:.2f} s (goal < {RESTART_GOAL_S:.0f} s)")
        response = second.client().post("/predict", files={"file": ("x.jpeg", image, "image/jpeg")})
    assert response.status_code == 200
    assert ready_s < RESTART_GOAL_S, f"restart to ready took {ready_s:.1f} s, goal < {RESTART_GOAL_S:.0f} s"
    got, want = response.json()["results"][0], expected["results"][0]
    assert [p["probability"] for p in got["predictions"]] == [p["probability"] for p in want["predictions"]]
