"""Benchmark the DICOM node: instances per second from dcmtk's `storescu` to the SR stored in Orthanc, against
`POST /predict` on the same files, by the same service process, in the same run.

    .venv/bin/python bench/dicom.py [--copies 20] [--concurrency 2] [--rounds 2]

The files are the chest radiographs of ../shared/data/dicom_samples that the service's default model runs on
(JPEG baseline, JPEG 2000, a file without meta header), each copied `--copies` times with fresh SOP Instance UIDs
(the node answers a resent instance once, so every copy must be new). One `python -m service` runs with its DICOM
node on (C-STORE SCP, results by C-STORE to a real Orthanc started by tests/orthanc_support.py on loopback).
- /predict: `--concurrency` keep-alive connections each posting one file at a time (bench/http_load.py), until
  every file has its answer;
- DICOM: `--concurrency` storescu associations, each sending its share of the files one after the other (what a
  modality or a PACS routing rule does), until Orthanc holds one SR per file (read over its REST API). The node
  answers a C-STORE once the instance is durably in its inbox and infers in the background; the "success status"
  row times those answers alone.
Both paths decode, gate and infer through the same registry and batcher; DICOM adds the association, the SR, the
outbox write and the C-STORE to Orthanc, which Orthanc stores. The paths take turns for `--rounds` rounds (a row
sums its rounds), so a slow spell of the shared machine falls on both. Goal: DICOM >= 90% of the /predict rate.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import onnxruntime as ort
import pydicom
from http_load import Connection, build_post
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from orthanc_support import OrthancServer, storescu_profile  # noqa: E402  (the tests' harness: a real Orthanc)

SHARED_SAMPLES = REPO.parent / "shared" / "data" / "dicom_samples"
SAMPLES = SHARED_SAMPLES if SHARED_SAMPLES.is_dir() else REPO / "tests" / "data" / "dicom_samples"  # same files
# Chest radiographs the bundled model's intended use admits, one per transfer syntax family.
CHEST_FILES = (
    "SIIM_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819_CR_chest_MONOCHROME2_jpeg.dcm",
    "RG1_J2KI_CR_chest_PA_MONOCHROME1_j2k.dcm",
    "CR-MONO1-10-chest_MONOCHROME1_no_meta.dcm",
)
NODE_AE = "MEDIMAGING"
MODALITY_AE = "BENCHSCU"
WARMUP_FILES = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or "unknown CPU"
    orthanc = subprocess.run(["Orthanc", "--version"], capture_output=True, text=True, check=False).stdout.split("\n")
    return (
        f"{platform.node()}: {os.cpu_count()} logical cores ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, onnxruntime {ort.__version__} (CPUExecutionProvider), "
        f"{orthanc[0].strip() or 'Orthanc'}, storescu {dcmtk_version()}; client, service and Orthanc share the cores"
    )


def dcmtk_version() -> str:
    out = subprocess.run(["storescu", "--version"], capture_output=True, text=True, check=False).stdout
    return out.split("v", 1)[1].split()[0] if "v" in out else "?"


def fresh_copies(sources: Sequence[Path], copies: int, folder: Path) -> list[Path]:
    """`copies` of each source with new SOP Instance and Series UIDs (same pixels, same transfer syntax)."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for number in range(copies):
        for source in sources:
            dataset = pydicom.dcmread(source, force=True)
            dataset.SOPInstanceUID = generate_uid()
            if getattr(dataset, "file_meta", None) is not None and "MediaStorageSOPInstanceUID" in dataset.file_meta:
                dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
            path = folder / f"{number:04d}-{source.name}"
            dataset.save_as(path, enforce_file_format=False)
            made.append(path)
    return made


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    path: str
    instances: int = 0
    seconds: float = 0.0
    failures: int = 0
    service_cpu_s: float | None = None  # the service process's CPU over the row's runs
    orthanc_cpu_s: float | None = None

    def add(self, instances: int, seconds: float, failures: int, cpu: tuple[float, float] | None = None) -> None:
        self.instances += instances
        self.seconds += seconds
        self.failures += failures
        if cpu is not None:
            self.service_cpu_s = (self.service_cpu_s or 0.0) + cpu[0]
            self.orthanc_cpu_s = (self.orthanc_cpu_s or 0.0) + cpu[1]

    @property
    def rate(self) -> float:
        return self.instances / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        def per_instance(cpu_s: float | None) -> str:
            return f"{1000 * cpu_s / self.instances:>9.1f}" if cpu_s is not None and self.instances else f"{'-':>9}"

        return (
            f"{self.path:<36} {self.instances:>9} {self.seconds:>8.2f} {self.rate:>7.2f} {self.failures:>6} "
            f"{per_instance(self.service_cpu_s)} {per_instance(self.orthanc_cpu_s)}"
        )


class Node:
    """One `python -m service` with the DICOM node on, sending its results to `orthanc`."""

    def __init__(self, orthanc: OrthancServer, workdir: Path) -> None:
        self.http_port, self.dicom_port = free_port(), free_port()
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "SERVE_HOST": "127.0.0.1",
            "SERVE_PORT": str(self.http_port),
            "SERVE_LOG_LEVEL": "warning",
            "SERVE_DICOM_PORT": str(self.dicom_port),
            "SERVE_DICOM_AE_TITLE": NODE_AE,
            "SERVE_DICOM_ALLOWED_CALLERS": f"{MODALITY_AE}@127.0.0.1",
            "SERVE_DICOM_DESTINATION": f"dicom://{orthanc.ae_title}@{orthanc.host}:{orthanc.dicom_port}",
            "SERVE_DICOM_OUTBOX": str(workdir / "outbox"),
        }
        self.log = (workdir / "service.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{self.http_port}"
        deadline = time.monotonic() + 120
        while not self.ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (workdir / "service.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"the service did not become ready:\n{tail}")
            time.sleep(0.25)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def chunks(files: Sequence[Path], parts: int) -> list[list[Path]]:
    return [list(files[start::parts]) for start in range(parts) if files[start::parts]]


def run_predict(node: Node, files: Sequence[Path], concurrency: int) -> tuple[float, int]:
    """Seconds until every file has its /predict answer, and how many answers were not 200."""
    requests = [build_post("127.0.0.1", node.http_port, "/predict", path.read_bytes()) for path in files]

    async def client(share: list[bytes]) -> int:
        connection, failures = Connection("127.0.0.1", node.http_port), 0
        try:
            for request in share:
                failures += (await connection.send(request)).status != 200
        finally:
            await connection.close()
        return failures

    async def all_clients() -> int:
        shares = [requests[start::concurrency] for start in range(concurrency)]
        return sum(await asyncio.gather(*(client(share) for share in shares if share)))

    started = time.perf_counter()
    failures = asyncio.run(all_clients())
    return time.perf_counter() - started, failures


def run_dicom(node: Node, orthanc: OrthancServer, files: Sequence[Path], concurrency: int) -> tuple[float, float, int]:
    """Seconds from the first association until every C-STORE was answered, and until Orthanc holds one more SR
    per file (only the node stores into this Orthanc, so its instance count is the SR count); storescu failures."""
    before = orthanc.count_instances()
    with tempfile.TemporaryDirectory(prefix="bench-dicom-") as folder:
        profiles = [
            storescu_profile(share, Path(folder) / f"{n}.cfg") for n, share in enumerate(chunks(files, concurrency))
        ]
        started = time.perf_counter()
        processes = [
            storescu_process(share, node.dicom_port, profile)
            for share, profile in zip(chunks(files, concurrency), profiles, strict=True)
        ]
        failures = sum(process.wait(timeout=600) != 0 for process in processes)
        acknowledged = time.perf_counter() - started
    if failures:  # storescu stops an association at the first refused instance (no -nh): no SR count to wait for
        raise SystemExit(f"{failures} of {len(processes)} storescu associations failed; see the service's log")
    deadline = time.monotonic() + 600
    while orthanc.count_instances() < before + len(files):
        if time.monotonic() > deadline:
            raise SystemExit(f"Orthanc did not get {len(files)} SRs within 600 s")
        time.sleep(0.02)
    return acknowledged, time.perf_counter() - started, failures


def storescu_process(files: Sequence[Path], port: int, profile: Path) -> subprocess.Popen[bytes]:
    """One association sending `files` one after the other, each in its own transfer syntax (`profile`)."""
    args = ["storescu", "-xf", str(profile), "AsStored", "-aet", MODALITY_AE]
    args += ["-aec", NODE_AE, "127.0.0.1", str(port), *map(str, files)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@contextmanager
def running(workdir: Path) -> Iterator[tuple[OrthancServer, Node]]:
    orthanc = OrthancServer(workdir / "orthanc", ae_title="ORTHANC").start()
    try:
        node = Node(orthanc, workdir)
        try:
            yield orthanc, node
        finally:
            node.stop()
    finally:
        orthanc.stop(graceful=False)


def main(args: argparse.Namespace) -> None:
    for tool in ("storescu", "Orthanc"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed: apt-get install -y orthanc orthanc-dicomweb dcmtk")
    sources = [SAMPLES / name for name in CHEST_FILES]
    missing = [str(path) for path in sources if not path.is_file()]
    if missing:
        raise SystemExit(f"DICOM samples not found: {missing}")
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-dicom-") as folder, running(Path(folder)) as (orthanc, node):
        [model] = [m for m in httpx.get(f"{node.url}/v1/models", timeout=10).json()["models"] if m["default"]]
        print(
            f"model: {model['name']} {model['version']} ({model['variant']}, the service's default); files: "
            f"{len(sources)} chest DICOMs (JPEG baseline, JPEG 2000, no meta header) x {args.copies} copies with "
            f"fresh UIDs = {len(sources) * args.copies} instances per round, {args.rounds} rounds, concurrency "
            f"{args.concurrency}, the paths taking turns"
        )
        warm = fresh_copies(sources, 1, Path(folder) / "warm")[:WARMUP_FILES]
        run_predict(node, warm, 1)
        run_dicom(node, orthanc, warm, 1)
        rows = {
            "predict": Row("POST /predict -> answer"),
            "acked": Row("C-STORE -> success status"),
            "dicom": Row("C-STORE -> SR stored in Orthanc"),
        }
        assert orthanc.process is not None
        orthanc_pid = orthanc.process.pid
        per_round: list[float] = []  # DICOM / predict seconds for the same files, round by round
        for number in range(args.rounds):
            files = fresh_copies(sources, args.copies, Path(folder) / f"round{number}")
            order = ("predict", "dicom") if number % 2 == 0 else ("dicom", "predict")
            took: dict[str, float] = {}
            for path in order:
                cpu_before = (cpu_seconds(node.process.pid), cpu_seconds(orthanc_pid))
                if path == "predict":
                    took[path], failures = run_predict(node, files, args.concurrency)
                else:
                    acknowledged, took[path], failures = run_dicom(node, orthanc, files, args.concurrency)
                    rows["acked"].add(len(files), acknowledged, failures)
                cpu = (cpu_seconds(node.process.pid) - cpu_before[0], cpu_seconds(orthanc_pid) - cpu_before[1])
                rows[path].add(len(files), took[path], failures, cpu)
            per_round.append(took["predict"] / took["dicom"])
        sent = len(warm) + rows["dicom"].instances
        stored = orthanc.count_instances()
    print("CPU ms/inst: CPU time of the service process and of Orthanc over the row's runs, per instance")
    print(f"\n{'path':<36} {'instances':>9} {'seconds':>8} {'inst/s':>7} {'failed':>6} {'svc CPU':>9} {'Orth CPU':>9}")
    for row in rows.values():
        print(row.line())
    ratio = rows["dicom"].rate / rows["predict"].rate if rows["predict"].rate else float("nan")
    verdict = "meets" if ratio >= 0.9 else "misses"
    print(f"SRs in Orthanc: {stored} for {sent} instances sent by C-STORE (warm-up included)")
    spread = f"per round {min(per_round):.2f}-{max(per_round):.2f}" if len(per_round) > 1 else "one round"
    print(f"\nDICOM / predict = {ratio:.2f} ({verdict} the goal of >= 0.90; {spread})")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--copies", type=int, default=20, help="copies of each sample file per round")
    parser.add_argument("--concurrency", type=int, default=2, help="connections / associations at once")
    parser.add_argument("--rounds", type=int, default=2, help="turns each path takes")
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
