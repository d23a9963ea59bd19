"""Benchmark the service against raw onnxruntime, a plain FastAPI server and LitServe, on the same model and image.

    .venv/bin/python bench/serve.py [--model M.onnx ...] [--image X.png] [--requests 256] [--max-seconds 10]
                                    [--rounds 4]

Without --model it runs two models: the bundled one (28x28, 1 label) and a convnext_tiny at 224x224 with
14 labels (random weights), built with the trainer's model factory, exported by the export library
(`export_onnx`, the code behind `python -m export`) and cached under runs/bench/. Without --image every
request sends a 1024x1024 8-bit PNG made once from a Kermany radiograph (also cached there).

Every system does the same work per image: decode + preprocess with medcore.imaging, then onnxruntime.
- onnxruntime: in this process, N threads each running one image at a time (no HTTP, no batching), with the
  service's model loader (its intra-op thread choice, `service.model.load_model`);
- plain FastAPI: a minimal server that runs onnxruntime (default session options) per request in FastAPI's
  threadpool (no batching);
- LitServe: its LitAPI with batching on (max_batch_size 8, batch_timeout 5 ms), default server settings;
- service: `python -m service` with its default settings (pipelined decode, micro-batching, admission);
- service int8: the same on the model's int8 variant (model.int8.onnx beside it, when there is one), against
  plain FastAPI on fp32 at c=8 (goal >= 1.3x), with the variant's AUROC change beside it (from its record's
  export gate; bench/score_presentations.py --compare int8 measures it through the service on both test
  presentations).
Servers run as subprocesses on free 127.0.0.1 ports, all at once, and are stopped at the end. At each
concurrency the systems take `--rounds` turns (a row sums its rounds), so that a slow spell of the machine
falls on all of them; a server not being measured is paused (SIGSTOP). The load generator is
bench/http_load.py (pre-built requests on keep-alive asyncio streams); it shares the machine's cores with the
server, as the printed machine line says.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated

import httpx
import litserve as ls
import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, File, UploadFile
from http_load import Connection, build_post
from prometheus_client.parser import text_string_to_metric_families

from export.layout import variant_path
from medcore.imaging import load_model_input
from service.config import BUNDLED_MODEL
from service.model import load_model

REPO = Path(__file__).resolve().parents[1]
SOURCE_IMAGE = REPO.parent / "shared" / "data" / "kermany_chest_xray_subset" / "images" / "IM-0001-0001.jpeg"
CACHE = REPO / "runs" / "bench"
CHEST14 = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)  # fmt: skip
CONCURRENCY = (1, 8, 32)
WARMUP_REQUESTS = 8


@dataclass(frozen=True)
class Result:
    system: str
    concurrency: int
    latencies_s: list[float]
    wall_s: float
    errors: int
    peak_rss_mb: float
    mean_batch: float | None = None

    def row(self) -> str:
        lat = np.asarray(self.latencies_s) * 1e3
        p50, p99 = (np.percentile(lat, q) for q in (50, 99)) if lat.size else (float("nan"),) * 2
        rate = len(self.latencies_s) / self.wall_s
        batch = "-" if self.mean_batch is None else f"{self.mean_batch:.1f}"
        numbers = [f"{rate:.1f}", f"{p50:.1f}", f"{p99:.1f}", batch, f"{self.peak_rss_mb:.0f}", str(self.errors)]
        return format_row([self.system, str(self.concurrency), str(len(self.latencies_s)), *numbers])


COLUMNS: tuple[tuple[str, int], ...] = (("system", 16), ("conc.", 6), ("requests", 10), ("img/s", 10))
COLUMNS += (("p50 ms", 10), ("p99 ms", 10), ("batch", 8), ("RSS MB", 10), ("errors", 8))


def format_row(cells: Sequence[str]) -> str:
    """The first column left-aligned, the numbers right-aligned."""
    first, *rest = (width for _, width in COLUMNS)
    return cells[0].ljust(first) + "".join(cell.rjust(width) for cell, width in zip(cells[1:], rest, strict=True))


HEADER = format_row([name for name, _ in COLUMNS])


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", type=Path, action="append", help="ONNX model with its record (repeatable; default: both above)"
    )
    parser.add_argument("--image", type=Path, help="the image every request sends (default: a 1024x1024 PNG)")
    parser.add_argument("--requests", type=int, default=256, help="requests per system and concurrency")
    parser.add_argument("--max-seconds", type=float, default=10.0, help="stop a row early after this long")
    parser.add_argument("--rounds", type=int, default=4, help="turns the systems take at each concurrency")
    parser.add_argument(
        "--concurrency", type=int, action="append", help=f"concurrency to run (repeatable; default {CONCURRENCY})"
    )
    parser.add_argument("--plain-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--litserve-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return parser


# --- the plain FastAPI baseline (run in a subprocess with --plain-server) ---


def plain_app(model: Path) -> FastAPI:
    """Decode + onnxruntime per request in FastAPI's threadpool: what one writes without a batcher
    (an onnxruntime session with its default options)."""
    record = load_model(model, provider="cpu", intra_op_threads=1).record
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    app = FastAPI()

    @app.get("/health/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/predict")
    def predict(file: Annotated[UploadFile, File()]) -> dict[str, list[float]]:
        inputs = load_model_input(file.file.read(), record.preprocessing)
        (probabilities,) = session.run(["probabilities"], {"input": inputs[None]})
        return {"probabilities": probabilities[0].tolist()}

    return app


class OnnxLitAPI(ls.LitAPI):
    """LitServe with its batching on: decode per request, one onnxruntime call per batch."""

    def __init__(self, model: Path) -> None:
        super().__init__(max_batch_size=8, batch_timeout=0.005)
        self.model_path = model

    def setup(self, device: str) -> None:
        self.loaded = load_model(self.model_path, provider="cpu")

    def decode_request(self, request):  # type: ignore[no-untyped-def]  # LitServe reads the annotation
        return load_model_input(request["file"].file.read(), self.loaded.record.preprocessing)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        answer = self.loaded.predict(batch)  # (probabilities, ood_score) for a model with that output
        return answer[0] if isinstance(answer, tuple) else answer

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output: np.ndarray) -> dict[str, list[float]]:
        return {"probabilities": output.tolist()}


def litserve_main(model: Path, port: int) -> None:
    server = ls.LitServer(OnnxLitAPI(model), accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False)


# --- the models and the image ---


def convnext_tiny_model() -> Path:
    """convnext_tiny, 1x224x224, 14 labels, random weights: trainer factory -> checkpoint -> export_onnx."""
    out = CACHE / "convnext_tiny-224-chest14" / "model.onnx"
    if out.is_file():
        return out
    import torch

    from export import export_onnx
    from medcore.record import ModelRecord, Preprocessing, Provenance, Task
    from trainer.checkpoint import Checkpoint, save_checkpoint
    from trainer.models import ModelSpec, build_model

    torch.manual_seed(0)
    spec = ModelSpec("convnext_tiny", num_outputs=len(CHEST14), in_channels=1)
    record = ModelRecord(
        name="bench-convnext_tiny-chest14",
        version="0.0.0",
        task=Task.MULTILABEL,
        labels=CHEST14,
        thresholds=dict.fromkeys(CHEST14, 0.5),
        preprocessing=Preprocessing(height=224, width=224, channels=1, mean=(0.5,), std=(0.25,)),
        provenance=Provenance(architecture="convnext_tiny (random weights, for speed only)"),
    )
    checkpoint = CACHE / "convnext_tiny-224-chest14" / "checkpoint.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    state = build_model(spec).state_dict()
    save_checkpoint(Checkpoint(spec=spec, record=record, model_state=state, epoch=0, config={}), checkpoint)
    print(f"exporting {out} (once; cached) ...", flush=True)
    export_onnx(checkpoint, out, parity_images=[SOURCE_IMAGE], force=True)
    return out


def bench_image() -> Path:
    """A 1024x1024 8-bit grayscale PNG made from a real radiograph (the issue's test image size)."""
    out = CACHE / "chest-1024.png"
    if not out.is_file():
        from PIL import Image

        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(SOURCE_IMAGE).convert("L").resize((1024, 1024), Image.Resampling.BICUBIC).save(out)
    return out


# --- systems under test ---


class InProcess:
    """decode + onnxruntime in this process: N threads each running one image at a time."""

    def __init__(self, model: Path, data: bytes) -> None:
        self.loaded = load_model(model, provider="cpu")
        self.data = data
        for _ in range(WARMUP_REQUESTS):
            self.one()

    def one(self) -> float:
        started = time.perf_counter()
        self.loaded.predict(load_model_input(self.data, self.loaded.record.preprocessing)[None])
        return time.perf_counter() - started

    def run(self, concurrency: int, requests: int, max_s: float) -> HttpRun:
        deadline = time.monotonic() + max_s
        latencies: list[float] = []

        def worker(count: int) -> None:
            for _ in range(count):
                if time.monotonic() > deadline:
                    return
                latencies.append(self.one())

        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(worker, split(requests, concurrency)))
        return HttpRun(latencies, time.perf_counter() - started, 0, None)


@dataclass(frozen=True)
class HttpRun:
    latencies_s: list[float]
    wall_s: float
    errors: int
    batches: tuple[float, float] | None  # (images, batches) the service ran meanwhile; None for other servers


async def batch_totals(url: str) -> tuple[float, float] | None:
    """(images, batches) so far from the service's batch-size histogram; None for a server without one."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.get("/metrics")
    if response.status_code != 200:
        return None
    values = {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    return values.get("serve_batch_size_sum", 0.0), values.get("serve_batch_size_count", 0.0)


async def bench_http(port: int, request: bytes, concurrency: int, requests: int, max_s: float) -> HttpRun:
    """`requests` POSTs from `concurrency` keep-alive connections (opened before the clock starts); only 200s
    count as served. The requests are pre-built bytes on plain asyncio streams (bench/http_load.py)."""
    url = f"http://127.0.0.1:{port}"
    latencies: list[float] = []
    errors = 0
    connections = [Connection("127.0.0.1", port) for _ in range(concurrency)]
    await asyncio.gather(*(connection.open() for connection in connections))

    async def worker(connection: Connection, count: int) -> None:
        nonlocal errors
        for _ in range(count):
            if time.monotonic() > deadline:
                return
            started = time.perf_counter()
            response = await connection.send(request)
            if response.status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    before = await batch_totals(url)
    deadline = time.monotonic() + max_s
    started = time.perf_counter()
    counts = split(requests, concurrency)
    await asyncio.gather(*(worker(connection, count) for connection, count in zip(connections, counts, strict=True)))
    wall_s = time.perf_counter() - started
    after = await batch_totals(url)
    await asyncio.gather(*(connection.close() for connection in connections))
    batches = (after[0] - before[0], after[1] - before[1]) if before and after else None
    return HttpRun(latencies, wall_s, errors, batches)


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# --- servers as subprocesses ---


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server(
    command: list[str], env: dict[str, str], port: int, health: str = "/health/ready"
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server subprocess, wait for its health path, and always stop it."""
    # A file, not a pipe: a chatty server must never block on a full pipe.
    with tempfile.TemporaryFile() as log:
        # Its own session: stopping it stops its children too (LitServe's spawned workers would otherwise keep
        # running and take the cores from every later row).
        process = subprocess.Popen(
            command, cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_ready(process, " ".join(command), f"http://127.0.0.1:{port}", log, health)
            yield process
        finally:
            stop_group(process)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group of `process`, SIGKILL what is left after 15 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGCONT)  # a paused server must run to see its SIGTERM
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_ready(
    process: subprocess.Popen[bytes], name: str, url: str, log: IO[bytes], health: str, timeout_s: float = 120
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            log.seek(0)
            output = log.read().decode(errors="replace")
            raise SystemExit(f"server {name} exited with {process.returncode}:\n{output}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + health, timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"server {name} was not ready after {timeout_s:.0f} s")
        time.sleep(0.1)


def pause(process: subprocess.Popen[bytes]) -> None:
    """Freeze a server's whole process group (it holds no request then)."""
    os.killpg(process.pid, signal.SIGSTOP)


@contextlib.contextmanager
def running(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """Let a paused server run for the duration of the block."""
    os.killpg(process.pid, signal.SIGCONT)
    try:
        yield
    finally:
        pause(process)


def peak_rss_mb(pid: int) -> float:
    """A server's peak resident memory: VmHWM summed over every process of its group (it leads one), so
    LitServe's inference workers count as well as its parent. Each process's own peak: an upper bound when
    their peaks fall at different moments."""
    total_kib = 0
    for member in process_group(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:  # exited meanwhile
            continue
        total_kib += next((int(line.split()[1]) for line in lines if line.startswith("VmHWM:")), 0)
    return total_kib / 1024 if total_kib else float("nan")


def process_group(pgid: int) -> list[int]:
    """The live processes whose process group is `pgid` (field 5 of /proc/<pid>/stat)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        if int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


@dataclass
class Cell:
    """One system at one concurrency, summed over the rounds."""

    latencies_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    errors: int = 0
    images: float = 0.0
    batches: float = 0.0
    round_rates: list[float] = field(default_factory=list)  # img/s of each round

    def add(self, run: HttpRun) -> None:
        self.latencies_s += run.latencies_s
        self.wall_s += run.wall_s
        self.errors += run.errors
        self.round_rates.append(len(run.latencies_s) / run.wall_s)
        if run.batches is not None:
            self.images += run.batches[0]
            self.batches += run.batches[1]

    def result(self, system: str, concurrency: int, peak_rss_mb: float) -> Result:
        mean_batch = self.images / self.batches if self.batches else None
        return Result(system, concurrency, self.latencies_s, self.wall_s, self.errors, peak_rss_mb, mean_batch)


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or "unknown CPU"
    return (
        f"{platform.node()}: {os.cpu_count()} logical cores ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, onnxruntime {ort.__version__} (CPUExecutionProvider)"
    )


def main(args: argparse.Namespace) -> None:
    if args.plain_server:
        uvicorn.run(plain_app(args.model[0]), host="127.0.0.1", port=args.port, log_level="warning")
        return
    if args.litserve_server:
        litserve_main(args.model[0], args.port)
        return
    image = args.image or bench_image()
    models = args.model or [BUNDLED_MODEL, convnext_tiny_model()]
    for what, path in (("image", image), *(("model", m) for m in models)):
        if not path.is_file():
            raise SystemExit(f"{what} {path} does not exist; pass --{what}")
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    print(f"machine: {machine()}")
    for model in models:
        bench_model(model, image, args)


SYSTEMS = ("onnxruntime", "plain FastAPI", "LitServe", "service")


INT8 = "service int8"


def int8_file(model: Path) -> Path | None:
    """The int8 variant beside an fp32 file (model.onnx -> model.int8.onnx), if there is one."""
    path = variant_path(model, "int8")
    return path if path != model and path.is_file() else None


def bench_model(model: Path, image: Path, args: argparse.Namespace) -> None:
    data = image.read_bytes()
    record = load_model(model, provider="cpu").record
    int8 = int8_file(model)
    systems = (*SYSTEMS, INT8) if int8 else SYSTEMS
    print(
        f"\nmodel: {record.name} {record.version}, input {record.preprocessing.channels}x"
        f"{record.preprocessing.height}x{record.preprocessing.width}, {record.num_outputs} outputs; image: "
        f"{image.name} ({len(data)} bytes); {args.requests} requests per row (or {args.max_seconds:.0f} s) in "
        f"{args.rounds} rounds, the systems taking turns, after {WARMUP_REQUESTS} warm-up requests each"
    )
    print(
        "RSS MB: peak resident memory of the server's processes, its workers included (sum of each one's peak; "
        "onnxruntime rows: this whole bench process)"
    )
    me = [sys.executable, str(Path(__file__).resolve()), "--model", str(model)]
    ports = {name: free_port() for name in systems[1:]}
    commands = {
        "plain FastAPI": ([*me, "--plain-server", "--port", str(ports["plain FastAPI"])], {}, "/health/ready"),
        "LitServe": ([*me, "--litserve-server", "--port", str(ports["LitServe"])], {}, "/health"),
        "service": (
            [sys.executable, "-m", "service"],
            {
                "SERVE_MODEL_PATH": str(model.resolve()),
                "SERVE_HOST": "127.0.0.1",
                "SERVE_PORT": str(ports["service"]),
                "SERVE_LOG_LEVEL": "warning",
            },
            "/health/ready",
        ),
    }
    if int8 is not None:
        service_command, service_env, service_health = commands["service"]
        env = {**service_env, "SERVE_MODEL_PATH": str(int8.resolve()), "SERVE_PORT": str(ports[INT8])}
        commands[INT8] = (service_command, env, service_health)
    requests = {name: build_post("127.0.0.1", port, "/predict", data) for name, port in ports.items()}
    in_process = InProcess(model, data)
    with contextlib.ExitStack() as stack:
        # All servers run for the whole model so that the systems can take turns: each row sums `rounds` short
        # runs, and a slow spell of the machine falls on all of them. A server not being measured is stopped
        # (SIGSTOP), as idle is not free for all of them: LitServe's workers poll, 17% of a core here.
        processes = {
            name: stack.enter_context(server(command, env, ports[name], health))
            for name, (command, env, health) in commands.items()
        }
        for name, port in ports.items():
            asyncio.run(bench_http(port, requests[name], 1, WARMUP_REQUESTS, 60))
            pause(processes[name])
        print(HEADER)
        rows: dict[str, list[Result]] = {name: [] for name in systems}
        spreads: dict[int, tuple[float, float]] = {}
        for concurrency in args.concurrency or CONCURRENCY:
            cells = {name: Cell() for name in systems}
            per_round, seconds = max(1, args.requests // args.rounds), args.max_seconds / args.rounds
            for _ in range(args.rounds):
                cells["onnxruntime"].add(in_process.run(concurrency, per_round, seconds))
                for name, port in ports.items():
                    with running(processes[name]):
                        run = asyncio.run(bench_http(port, requests[name], concurrency, per_round, seconds))
                    cells[name].add(run)
            for name, cell in cells.items():
                rss = peak_rss_mb(processes[name].pid) if name in processes else self_peak_rss_mb()
                rows[name].append(cell.result(name, concurrency, rss))
                print(rows[name][-1].row(), flush=True)
            ratios = [
                mine / plain
                for mine, plain in zip(cells["service"].round_rates, cells["plain FastAPI"].round_rates, strict=True)
                if plain > 0  # a round in which plain served nothing has no ratio
            ]
            spreads[concurrency] = (min(ratios), max(ratios)) if ratios else (float("nan"), float("nan"))
    print(verdict(rows, spreads))
    if int8 is not None:
        print(int8_verdict(rows, int8))


def self_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; this whole process


def verdict(rows: dict[str, list[Result]], spreads: dict[int, tuple[float, float]]) -> str:
    """The goals: service >= plain img/s and p99 <= plain at every concurrency; >= 95% of in-process at c=8.
    Each line also gives the range of the per-round service/plain ratios: how much the machine moved."""
    lines = []
    for mine, plain, local in zip(rows["service"], rows["plain FastAPI"], rows["onnxruntime"], strict=True):
        rate, plain_rate, local_rate = (len(r.latencies_s) / r.wall_s for r in (mine, plain, local))
        p99, plain_p99 = (
            float(np.percentile(r.latencies_s, 99)) if r.latencies_s else float("nan") for r in (mine, plain)
        )
        low, high = spreads[mine.concurrency]
        line = f"c={mine.concurrency}: service/plain img/s {rate / plain_rate:.2f} (rounds {low:.2f}-{high:.2f}), "
        line += f"p99 {p99 * 1e3:.0f} ms (plain {plain_p99 * 1e3:.0f} ms)"
        if mine.concurrency == 8:
            line += f", service/in-process {rate / local_rate:.2f}"
        lines.append(line)
    return "\n".join(lines)


def int8_verdict(rows: dict[str, list[Result]], int8: Path) -> str:
    """The int8 goal: the service on int8 >= 1.3x plain FastAPI on fp32 at c=8, and what int8 costs in AUROC."""
    rates = {
        name: {r.concurrency: len(r.latencies_s) / r.wall_s for r in rows[name]} for name in (INT8, "plain FastAPI")
    }
    parity = load_model(int8, provider="cpu").record.parity
    deltas = [
        f"{split} {values['delta']:+.4f}"
        for split, labels in (parity.get("auroc") or {}).items()
        for values in labels.values()
        if values.get("delta") is not None
    ]
    shown = ", ".join(deltas) or "not recorded"
    lines = []
    for concurrency, rate in rates[INT8].items():
        plain = rates["plain FastAPI"].get(concurrency, float("nan"))
        goal = " (goal >= 1.30)" if concurrency == 8 else ""
        lines.append(
            f"c={concurrency}: service int8 / plain FastAPI fp32 img/s {rate / plain if plain else float('nan'):.2f}"
            f"{goal}; int8 delta AUROC vs fp32 (export gate, {parity.get('gate', {}).get('split', '?')}-gated): {shown}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
