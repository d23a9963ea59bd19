"""Serving on a GPU: the service against a plain FastAPI server calling onnxruntime CUDA one image per call.

    python bench/gpu_serve.py --model-dir MODELS [--provider cuda] [--size 2048] [--concurrency 1 16 64]
                              [--requests 2000] [--max-seconds 8] [--json out.json] [--logs DIR]

Every request posts the same --size² 8-bit grayscale JPEG (made from a real Kermany radiograph). Systems, each a
subprocess on a free 127.0.0.1 port, measured in turn at every concurrency (the others paused):
- plain FastAPI: decode + preprocess with medcore in FastAPI's threadpool, then one onnxruntime call per image on
  the --provider (default session options), the fp16 variant;
- service: `python -m service` on MODELS with SERVE_PROVIDER=--provider and SERVE_VARIANT=fp16, host decoding;
- service + nvImageCodec: the same with SERVE_DECODER=nvimgcodec (JPEG decoded on the GPU; where nvImageCodec or
  a GPU is missing the service decodes on the host and its row says so).
The load generator is bench/http_load.py (keep-alive asyncio streams in this process). Goals (issue 21): the
service at c=64 >= 1,500 img/s with p99 <= 150 ms; with GPU decode >= 3,000 img/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, UploadFile  # at module level: FastAPI resolves the route's annotations here

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(REPO), str(BENCH)]

from http_load import build_post  # noqa: E402
from serve import bench_http, free_port, pause, running, stop_group, wait_ready  # noqa: E402

SOURCE_IMAGE = REPO / "tests" / "data" / "kermany_chest_xray_subset" / "images" / "IM-0001-0001.jpeg"
GOALS = {"service": (1500.0, 150.0), "service + nvImageCodec": (3000.0, 150.0)}  # at c=64: img/s, p99 ms
SYSTEMS = ("plain FastAPI", "service", "service + nvImageCodec")


def bench_jpeg(size: int) -> bytes:
    from PIL import Image

    image = Image.open(SOURCE_IMAGE).convert("L").resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def plain_app(model: Path, provider: str) -> FastAPI:
    """What one writes without a batcher: medcore decode, then onnxruntime per request (default options)."""
    import onnxruntime as ort

    from medcore.imaging import load_model_input
    from service.model import load_model, preload_cuda_libraries

    record = load_model(model, provider="cpu", intra_op_threads=1).record
    providers = ["CPUExecutionProvider"]
    if provider == "cuda":
        preload_cuda_libraries()
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    session = ort.InferenceSession(str(model), providers=providers)
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


@contextlib.contextmanager
def server(command: list[str], env: dict[str, str], port: int, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A server subprocess logging to `log_path`, ready on /health/ready, always stopped."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env}, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        try:
            with log_path.open("rb") as reader:
                wait_ready(process, " ".join(command[:3]), f"http://127.0.0.1:{port}", reader, "/health/ready", 300)
            yield process
        finally:
            stop_group(process)


def row(system: str, concurrency: int, latencies: list[float], wall_s: float, errors: int,
        batches: tuple[float, float] | None, note: str) -> dict[str, Any]:  # fmt: skip
    lat = np.asarray(latencies) * 1e3
    rate = len(latencies) / wall_s if wall_s else 0.0
    p50, p99 = (float(np.percentile(lat, q)) for q in (50, 99)) if lat.size else (float("nan"),) * 2
    batch = f", mean batch {batches[0] / batches[1]:.1f}" if batches and batches[1] else ""
    goal = GOALS.get(system) if concurrency == 64 else None
    return {
        "section": "serving", "what": f"{system}, c={concurrency}{note}",
        "value": f"{rate:.0f} img/s, p50 {p50:.0f} ms, p99 {p99:.0f} ms{batch}, {errors} errors",
        "reference": "", "goal": f">= {goal[0]:,.0f} img/s, p99 <= {goal[1]:.0f} ms" if goal else "",
        "ok": (rate >= goal[0] and p99 <= goal[1] and errors == 0) if goal else None,
        "img_s": rate, "p99_ms": p99,
    }  # fmt: skip


def decoder_note(log_path: Path) -> str:
    """What the service's log says it decodes with (SERVE_DECODER=nvimgcodec falls back with a log line)."""
    text = log_path.read_text(errors="replace")
    if "decoder: nvImageCodec on CUDA device" in text:
        return " (JPEG decoded on the GPU)"
    return " (nvImageCodec unavailable: decoded on the host)"


def main(args: argparse.Namespace) -> None:
    if args.plain_server:
        import uvicorn

        uvicorn.run(plain_app(args.plain_model, args.provider), host="127.0.0.1", port=args.port, log_level="warning")
        return
    from medcore.record import VARIANT_FILES

    fp16 = next(args.model_dir.glob(f"*/*/{VARIANT_FILES['fp16']}"), None)
    if fp16 is None:
        raise SystemExit(f"no <name>/<version>/{VARIANT_FILES['fp16']} under {args.model_dir}")
    logs = args.logs or Path(os.environ.get("TMPDIR", "/tmp"))
    logs.mkdir(parents=True, exist_ok=True)
    data = bench_jpeg(args.size)
    ports = {name: free_port() for name in SYSTEMS}
    base_env = {"SERVE_MODEL_DIR": str(args.model_dir.resolve()), "SERVE_VARIANT": "fp16", "SERVE_HOST": "127.0.0.1",
                "SERVE_PROVIDER": args.provider, "SERVE_LOG_LEVEL": "info", "SERVE_MAX_PENDING": "256"}  # fmt: skip
    plain = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--plain-server",
        "--plain-model",
        str(fp16),
        "--provider",
        args.provider,
        "--port",
        str(ports["plain FastAPI"]),
        "--model-dir",
        str(args.model_dir),
    ]
    commands = {
        "plain FastAPI": (plain, {}),
        "service": ([sys.executable, "-m", "service"], {**base_env, "SERVE_PORT": str(ports["service"]),
                                                       "SERVE_DECODER": "host"}),
        "service + nvImageCodec": ([sys.executable, "-m", "service"], {
            **base_env, "SERVE_PORT": str(ports["service + nvImageCodec"]), "SERVE_DECODER": "nvimgcodec"}),
    }  # fmt: skip
    print(f"image: {args.size}x{args.size} 8-bit JPEG, {len(data)} bytes; model {fp16.parent.parent.name} "
          f"{fp16.parent.name} fp16; provider {args.provider}; {args.requests} requests (or {args.max_seconds:.0f} s) "
          f"per row", flush=True)  # fmt: skip
    rows = []
    with contextlib.ExitStack() as stack:
        processes = {}
        for name, (command, env) in commands.items():
            log_path = logs / f"server-{SYSTEMS.index(name)}.log"
            processes[name] = stack.enter_context(server(command, env, ports[name], log_path))
            request = build_post("127.0.0.1", ports[name], "/predict", data)
            asyncio.run(bench_http(ports[name], request, 1, 4, 60))  # warm the connection path
            pause(processes[name])
        notes = {name: decoder_note(logs / "server-2.log") if name == SYSTEMS[2] else "" for name in SYSTEMS}
        for concurrency in args.concurrency:
            for name in SYSTEMS:
                request = build_post("127.0.0.1", ports[name], "/predict", data)
                requests = max(args.requests, concurrency)
                with running(processes[name]):
                    run = asyncio.run(bench_http(ports[name], request, concurrency, requests, args.max_seconds))
                rows.append(row(name, concurrency, run.latencies_s, run.wall_s, run.errors, run.batches, notes[name]))
                print(f"{rows[-1]['what']:<70} {rows[-1]['value']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="a model directory with an fp16 variant")
    parser.add_argument("--provider", choices=("cpu", "cuda"), default="cuda")
    parser.add_argument("--size", type=int, default=2048, help="the JPEG's side in pixels")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--requests", type=int, default=2000, help="requests per row (at least the concurrency)")
    parser.add_argument("--max-seconds", type=float, default=8.0, help="stop a row after this long")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--logs", type=Path, help="folder for the servers' logs")
    parser.add_argument("--plain-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plain-model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
