"""Shared pieces for the service tests: a tiny real ONNX model, real images, a real uvicorn server."""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import uvicorn
from data_location import DATA  # ../shared/data beside the clone, else the sample in tests/data
from prometheus_client.parser import text_string_to_metric_families

from medcore.imaging import load_model_input
from medcore.record import ONNX_METADATA_KEY, ModelRecord
from service.app import create_app
from service.config import Settings
from service.model import LoadedModel

KERMANY = DATA / "kermany_chest_xray_subset" / "images"
COVID = DATA / "covid_chestxray_ieee8023_subset" / "images"
# PNG bytes behind a .jpg name: decoding must go by content.
PNG_NAMED_JPG = COVID / "000001-12.jpg"
RGBA_PNG = COVID / "000001-3.png"

TINY_RECORD: dict[str, Any] = {
    "name": "tiny-test",
    "version": "0.0.1",
    "task": "binary",
    "labels": ["pneumonia"],
    "thresholds": {"pneumonia": 0.5},
    "preprocessing": {
        "height": 28,
        "width": 28,
        "channels": 1,
        "crop": "center_square",
        "interpolation": "bicubic",
        "mean": [0.5],
        "std": [0.25],
    },
    "provenance": {"architecture": "tiny-test"},
}


def require_data() -> None:
    if not KERMANY.is_dir():
        pytest.fail(f"real test data not found at {DATA}; CI keeps ../shared beside the clone")


def kermany_images(count: int) -> list[Path]:
    require_data()
    return sorted(KERMANY.glob("*.jpeg"))[:count]


def build_tiny_model(path: Path, record_json: str | None = None, *, with_record: bool = True) -> Path:
    """Export conv -> pool -> linear -> sigmoid (1x28x28 -> 1) with the service's I/O contract.

    `record_json` overrides the embedded record text; `with_record=False` leaves it out.
    torch and onnx are imported here only: the service itself never imports them.
    """
    import onnx
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.AvgPool2d(7),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 1),
        nn.Sigmoid(),
    ).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter is asked for on purpose
        torch.onnx.export(
            net,
            (torch.zeros(1, 1, 28, 28),),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["probabilities"],
            dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}},
        )
    if with_record:
        model = onnx.load(str(path))
        entry = model.metadata_props.add()
        entry.key = ONNX_METADATA_KEY
        entry.value = record_json if record_json is not None else ModelRecord.model_validate(TINY_RECORD).to_json()
        onnx.save(model, str(path))
    return path


@functools.cache
def tiny_model() -> Path:
    """The default tiny model, exported once per test process into a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="service-tests-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return build_tiny_model(folder / "model.onnx")


def reference_probabilities(model_path: Path, data: bytes) -> np.ndarray:
    """One image through onnxruntime directly, with the record's own preprocessing: the expected answer."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    record = ModelRecord.from_json(session.get_modelmeta().custom_metadata_map[ONNX_METADATA_KEY])
    inputs = load_model_input(data, record.preprocessing)
    (probabilities,) = session.run(["probabilities"], {"input": inputs[None]})
    return np.asarray(probabilities[0])


@dataclass
class RunningServer:
    url: str

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


@contextmanager
def running_server(settings: Settings, *, wait_ready: bool = True) -> Iterator[RunningServer]:
    """A real uvicorn server on a free loopback port, in a background thread."""
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), what="the server to start")
        if not server.started:
            raise RuntimeError("the server failed to start (see the log above)")
        if wait_ready:
            wait_until(lambda: _get_status(url, "/health/ready") == 200, what="/health/ready")
        yield RunningServer(url)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def _get_status(url: str, path: str) -> int:
    return httpx.get(url + path, timeout=5).status_code


def wait_until(condition: Callable[[], bool], *, what: str, timeout_s: float = 30.0) -> None:
    """Poll `condition`; the timeout only guards against a hang, it is not an assertion about speed."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what} after {timeout_s} s")
        time.sleep(0.01)


def post_image(client: httpx.Client, data: bytes, filename: str = "image.jpg") -> httpx.Response:
    return client.post("/predict", files={"file": (filename, data, "application/octet-stream")})


def metric_samples(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """/metrics parsed by prometheus-client's own parser: {(sample name, labels): value}."""
    text = client.get("/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, /, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@contextmanager
def gated_server(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, *, closed: bool = False
) -> Iterator[tuple[RunningServer, Gate]]:
    """A server whose worker passes through a `Gate`; `closed=True` holds it in warm-up.

    One model call at a time unless the settings say otherwise, so a held gate makes the model busy."""
    if "model_concurrency" not in settings.model_fields_set:
        settings = settings.model_copy(update={"model_concurrency": 1})
    gate = Gate.install(monkeypatch)
    if closed:
        gate.close()
    with running_server(settings, wait_ready=not closed) as server:
        try:
            yield server, gate
        finally:
            gate.open.set()  # never leave the worker stuck while the server shuts down


class Gate:
    """Holds the inference worker inside `LoadedModel.predict` until opened (the real model still runs).

    Lets tests reach states that are otherwise races: "warming up", "worker busy and queue full",
    "this batch fails". Install with `Gate.install(monkeypatch)` before the server starts.
    """

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()
        self.fail_next = False
        self.open.set()

    @classmethod
    def install(cls, monkeypatch: pytest.MonkeyPatch) -> Gate:
        gate = cls()
        real_predict = LoadedModel.predict

        def gated_predict(model: LoadedModel, batch: np.ndarray) -> np.ndarray:
            gate.entered.set()
            gate.open.wait(30)
            if gate.fail_next:
                gate.fail_next = False
                raise RuntimeError("injected failure")
            return real_predict(model, batch)

        monkeypatch.setattr(LoadedModel, "predict", gated_predict)
        return gate

    def close(self) -> None:
        self.entered.clear()
        self.open.clear()


@dataclass
class ServiceProcess:
    """`python -m service` in a subprocess: its URL and every line it wrote to stderr (JSON logs)."""

    url: str
    process: subprocess.Popen[str]
    lines: list[str]

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def log_entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.lines) if line.startswith("{")]


@contextmanager
def service_process(env: dict[str, str], *, wait_ready: bool = True) -> Iterator[ServiceProcess]:
    """Run the real entry point on a free loopback port (SERVE_PORT=0; the port is read from its log)."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("SERVE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "service"],
        cwd=Path(__file__).resolve().parents[1],
        env={**clean, "SERVE_HOST": "127.0.0.1", "SERVE_PORT": "0", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert process.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stderr.readline, "")), daemon=True)
    reader.start()
    try:

        def started() -> bool:
            return process.poll() is not None or any("Uvicorn running on" in line for line in lines)

        wait_until(started, what="python -m service to start", timeout_s=60)
        match = next((re.search(r"http://127\.0\.0\.1:(\d+)", ln) for ln in lines if "Uvicorn running on" in ln), None)
        if match is None:
            raise RuntimeError("python -m service did not start:\n" + "".join(lines))
        running = ServiceProcess(f"http://127.0.0.1:{match.group(1)}", process, lines)
        if wait_ready:
            wait_until(lambda: _get_status(running.url, "/health/ready") == 200, what="/health/ready", timeout_s=60)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        reader.join(10)


def record_for(
    name: str, version: str, *, task: str = "binary", labels: tuple[str, ...] = ("pneumonia",), **extra: Any
) -> str:
    """TINY_RECORD with another name, version, task and labels (thresholds 0.5), as record JSON."""
    record = {**TINY_RECORD, "name": name, "version": version, "task": task, "labels": list(labels), **extra}
    record["thresholds"] = {label: 0.5 for label in labels}
    return ModelRecord.model_validate(record).to_json()


def build_heatmap_model(path: Path, record_json: str, *, heatmaps: bool = True) -> Path:
    """A tiny class-activation-map net (1x28x28): conv features -> 1x1 conv to one map per label [N, L, 4, 4];
    logits are the maps' spatial means, as export's `heatmaps` contract says; sigmoid, or softmax for multiclass.

    With `heatmaps=False` the same net exports only "probabilities" (a model that cannot explain).
    """
    import onnx
    import torch
    from torch import nn

    record = ModelRecord.from_json(record_json)
    labels = record.num_outputs
    multiclass = record.task.value == "multiclass"

    class Cam(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(7))
            self.head = nn.Conv2d(4, labels, 1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            maps = self.head(self.features(x))
            logits = maps.mean(dim=(2, 3))
            probs = torch.softmax(logits, dim=1) if multiclass else torch.sigmoid(logits)
            return probs, maps

    torch.manual_seed(1)
    net = Cam().eval()
    names = ["probabilities", "heatmaps"] if heatmaps else ["probabilities"]

    class OnlyProbabilities(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)[0]

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net if heatmaps else OnlyProbabilities(),
            (torch.zeros(1, 1, 28, 28),),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=names,
            dynamic_axes={name: {0: "batch"} for name in ["input", *names]},
        )
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key = ONNX_METADATA_KEY
    entry.value = record_json
    onnx.save(model, str(path))
    return path
