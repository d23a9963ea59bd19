"""Open-loop overload: the service at a multiple of its measured capacity, for minutes.

1. Starts `python -m service` (the bundled model unless --model-dir) on a free loopback port.
2. Measures capacity: closed loop at --concurrency for --capacity-s seconds (img/s of 200s).
3. Sends Poisson arrivals at --factor x capacity for --duration-s seconds, never waiting for answers
   (open loop: a slow server does not slow the sender down, as real clients do not).
4. Prints status counts, p50/p99 of accepted requests against SERVE_DEADLINE_MS, and the server's
   resident memory (sampled from /proc every second) after warm-up.

Pass criteria (exit 1 otherwise): only 200 and 503 come back; p99 of accepted requests within the
deadline; resident memory within +/-10% of its post-warm-up median. Client and server share the
machine's cores: the figures are for that set-up, which the output states.

    .venv/bin/python bench/overload.py                       # 2x capacity for 2 minutes
    .venv/bin/python bench/overload.py --duration-s 20       # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from http_load import build_post, read_response

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=None, help="image to post (default: a sample X-ray)")
    parser.add_argument("--model-dir", type=Path, default=None, help="SERVE_MODEL_DIR (default: the bundled model)")
    parser.add_argument("--factor", type=float, default=2.0, help="offered load as a multiple of capacity")
    parser.add_argument("--duration-s", type=float, default=120.0)
    parser.add_argument("--capacity-s", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop clients for the capacity run")
    parser.add_argument("--deadline-ms", type=int, default=2000, help="SERVE_DEADLINE_MS for the server")
    parser.add_argument("--warmup-s", type=float, default=15.0, help="overload seconds before memory is judged")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def find_image(explicit: Path | None) -> bytes:
    if explicit is not None:
        return explicit.read_bytes()
    candidates = sorted(
        p for p in REPO.glob("tests/data/**/*") if p.suffix.lower() in (".jpeg", ".jpg", ".png") and p.is_file()
    )
    if not candidates:
        raise SystemExit("no sample image found under tests/data; pass --image")
    return max(candidates, key=lambda p: p.stat().st_size).read_bytes()


class Server:
    """`python -m service` in a subprocess; its URL comes from uvicorn's start-up line."""

    def __init__(self, env: dict[str, str]) -> None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("SERVE_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            cwd=REPO,
            env={**clean, "SERVE_HOST": "127.0.0.1", "SERVE_PORT": "0", **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.url = ""
        assert self.process.stderr is not None
        started = time.monotonic()
        for line in self.process.stderr:
            match = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
            if match:
                self.url = f"http://127.0.0.1:{match.group(1)}"
                break
            if time.monotonic() - started > 120:
                break
        if not self.url:
            self.process.kill()
            raise SystemExit("the service did not start")
        # Keep draining stderr so the server never blocks on a full pipe.
        threading.Thread(target=lambda: [None for _ in self.process.stderr or []], daemon=True).start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit("the service never became ready")

    def rss_mb(self) -> float:
        text = Path(f"/proc/{self.process.pid}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", text)
        return int(match.group(1)) / 1024 if match else float("nan")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


FAILURES: Counter[str] = Counter()  # why requests got no HTTP answer, by exception type
SERVER_TIMES: list[float] = []  # the service's own timings_ms.total of each 200, in seconds


def raw_request(url: str, image: bytes) -> tuple[str, int, bytes]:
    """(host, port, the whole HTTP/1.1 request) for POST /predict with `image` as a raw body, built once."""
    host, port = url.removeprefix("http://").split(":")
    return host, int(port), build_post(host, int(port), "/predict", image, content_type="image/jpeg", keep_alive=False)


async def post(target: tuple[str, int, bytes], timeout_s: float = 60.0) -> tuple[int, float]:
    """Send one pre-built request on its own connection and read the answer: (status, seconds).

    Plain asyncio streams, not an HTTP client library: the sender shares the cores with the server, and
    per request this costs it a fraction of what httpx does (see docs/reliability.md)."""
    host, port, request = target
    started = time.perf_counter()
    writer = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            await writer.drain()
            response = await read_response(reader)
        status = response.status
        if status == 200:
            SERVER_TIMES.append(json.loads(response.body)["results"][0]["timings_ms"]["total"] / 1e3)
    except (OSError, TimeoutError, ValueError, IndexError, KeyError, EOFError, asyncio.LimitOverrunError) as exc:
        status = -1  # refused, reset, timed out or unreadable: counted, never ignored
        FAILURES[type(exc).__name__] += 1
    finally:
        if writer is not None:
            writer.close()
    return status, time.perf_counter() - started


async def capacity(url: str, image: bytes, concurrency: int, seconds: float) -> float:
    done = 0
    stop_at = time.monotonic() + seconds
    target = raw_request(url, image)

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop_at:
            status, _ = await post(target)
            done += status == 200

    await post(target)
    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.monotonic() - started)


async def open_loop(
    server: Server, image: bytes, rate: float, seconds: float, seed: int
) -> tuple[list[tuple[float, int, float]], list[tuple[float, float]], float]:
    """(send time, status, latency) per request, (time, RSS MB) samples, and the sender's largest lag behind
    its schedule in seconds (how far it fell behind the arrivals it was to make)."""
    rng = random.Random(seed)
    results: list[tuple[float, int, float]] = []
    memory: list[tuple[float, float]] = []
    tasks: set[asyncio.Task[None]] = set()
    target = raw_request(server.url, image)
    lag = 0.0
    t0 = time.monotonic()

    async def one(sent: float) -> None:
        status, latency = await post(target)
        results.append((sent, status, latency))

    async def sample_memory() -> None:
        while time.monotonic() - t0 < seconds:
            memory.append((time.monotonic() - t0, server.rss_mb()))
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample_memory())
    next_at = 0.0
    while next_at < seconds:
        delay = t0 + next_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        lag = max(lag, -delay)
        task = asyncio.create_task(one(next_at))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_at += rng.expovariate(rate)
    await sampler
    if tasks:
        await asyncio.gather(*tasks)
    return results, memory, lag


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    args = parse_args()
    image = find_image(args.image)
    env = {"SERVE_DEADLINE_MS": str(args.deadline_ms), "SERVE_LOG_LEVEL": "info"}
    if args.model_dir is not None:
        env["SERVE_MODEL_DIR"] = str(args.model_dir)
    server = Server(env)
    try:
        measured = asyncio.run(capacity(server.url, image, args.concurrency, args.capacity_s))
        rate = args.factor * measured
        SERVER_TIMES.clear()
        print(f"machine: {os.cpu_count()} cores shared by client and server; image {len(image)} bytes")
        print(f"capacity (closed loop, c={args.concurrency}, {args.capacity_s:.0f} s): {measured:.1f} img/s")
        print(f"offered: {rate:.1f} req/s ({args.factor:g}x) for {args.duration_s:.0f} s, Poisson arrivals")
        started = time.monotonic()
        results, memory, lag = asyncio.run(open_loop(server, image, rate, args.duration_s, args.seed))
        took = time.monotonic() - started
    finally:
        server.stop()
    statuses = Counter(status for _, status, _ in results)
    accepted = [latency for _, status, latency in results if status == 200]
    rejected = [latency for _, status, latency in results if status == 503]
    steady = [rss for t, rss in memory if t >= args.warmup_s]
    median_rss = statistics.median(steady) if steady else float("nan")
    spread = max(abs(r - median_rss) / median_rss for r in steady) if steady else float("nan")
    p99 = percentile(accepted, 0.99) * 1e3
    print(f"responses: {dict(sorted(statuses.items()))} of {len(results)} sent (-1: no HTTP answer)")
    if FAILURES:
        print(f"no HTTP answer, by cause: {dict(FAILURES.most_common())}")
    print(
        f"the run took {took:.0f} s for {args.duration_s:.0f} s of arrivals; "
        f"the sender lagged its schedule by {lag * 1e3:.0f} ms at most"
    )
    print(f"served: {len(accepted) / args.duration_s:.1f} img/s; 503: {len(rejected) / args.duration_s:.1f}/s")
    print(
        f"accepted latency ms: p50 {percentile(accepted, 0.5) * 1e3:.0f}, p99 {p99:.0f} "
        f"(deadline {args.deadline_ms}); 503 answered in p99 {percentile(rejected, 0.99) * 1e3:.0f} ms"
    )
    print(
        f"server-side total ms of accepted (handler start to response): p50 {percentile(SERVER_TIMES, 0.5) * 1e3:.0f}, "
        f"p99 {percentile(SERVER_TIMES, 0.99) * 1e3:.0f}"
    )
    if steady:
        print(
            f"server RSS after {args.warmup_s:.0f} s: median {median_rss:.0f} MB, "
            f"min {min(steady):.0f}, max {max(steady):.0f} (largest deviation {spread * 100:.1f}%)"
        )
    problems = []
    if set(statuses) - {200, 503}:
        problems.append(f"statuses other than 200/503: {sorted(set(statuses) - {200, 503})}")
    if accepted and p99 > args.deadline_ms:
        problems.append(f"p99 of accepted {p99:.0f} ms is over the {args.deadline_ms} ms deadline")
    if steady and spread > 0.10:
        problems.append(f"resident memory moved {spread * 100:.1f}% (> 10%) after warm-up")
    for problem in problems:
        print(f"FAIL: {problem}")
    print("PASS" if not problems else "FAIL")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
