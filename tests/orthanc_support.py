"""A real PACS for the DICOM tests: Debian's Orthanc (with its DICOMweb plugin) on loopback, plus dcmtk's tools.

`OrthancServer` writes its own JSON configuration into a folder (free DICOM and HTTP ports, its own storage, an AE
title, the DICOM modalities it may send to, DICOMweb on), starts `Orthanc` on it and waits until both its REST API and
its DICOM port answer. `stop()` then `start()` brings it back on the same ports and the same storage, for the
"PACS down, then up again" tests. The REST helpers read back what arrived. It never relies on the system's Orthanc
service (whose configuration in /etc/orthanc it ignores).

Fixtures: `orthanc` (a started server in the test's tmp folder, stopped after it) and `orthanc_factory` (make one or
more, each with its own options). Test modules import them by name: `from orthanc_support import orthanc`.

Missing tools skip locally and FAIL under CI=true (`.ci/run` installs them), so CI never passes by skipping.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset

ORTHANC_BINARY = "Orthanc"
# Debian's orthanc-dicomweb puts the plugin here (a symlink to /usr/lib/orthanc/libOrthancDicomWeb.so.<version>).
DICOMWEB_PLUGIN_CANDIDATES = (
    Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
    Path("/usr/lib/orthanc/libOrthancDicomWeb.so"),
)
DICOMWEB_ROOT = "/dicom-web/"
APT_HINT = "apt-get install -y orthanc orthanc-dicomweb dcmtk"
READY_TIMEOUT_S = 30.0


def missing_tool(reason: str) -> None:
    """Skip, except under CI=true where a missing PACS or dcmtk must fail the run instead of passing it by skipping."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: tests must not pass by skipping; {APT_HINT})")
    pytest.skip(f"{reason}: {APT_HINT}")


def dicomweb_plugin() -> Path | None:
    for candidate in DICOMWEB_PLUGIN_CANDIDATES:
        if candidate.exists():
            return candidate.resolve()
    found = sorted(Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*")) if Path("/usr/lib/orthanc").is_dir() else []
    return found[0] if found else None


def require_orthanc() -> Path:
    """The DICOMweb plugin's path, after checking Orthanc and the plugin are installed (skip/fail otherwise)."""
    if shutil.which(ORTHANC_BINARY) is None:
        missing_tool("Orthanc is not installed")
    plugin = dicomweb_plugin()
    if plugin is None:
        missing_tool("the Orthanc DICOMweb plugin is not installed")
    assert plugin is not None
    return plugin


def require_dcmtk(*tools: str) -> None:
    for tool in tools or ("storescu", "echoscu"):
        if shutil.which(tool) is None:
            missing_tool(f"dcmtk's {tool} is not installed")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(condition: Callable[[], bool], *, what: str, timeout_s: float, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


@dataclass(frozen=True)
class DicomPeer:
    """A DICOM node Orthanc may talk to (for example the service's SCP): its AE title, host and port."""

    ae_title: str
    host: str
    port: int

    def as_modality(self) -> list[Any]:
        return [self.ae_title, self.host, self.port]


class OrthancRest:
    """Read what an Orthanc stored, over its REST API at `url` (a harness server, or the compose profile's)."""

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb base URL (what the service's SERVE_DICOM_DESTINATION takes for STOW-RS)."""
        return f"{self.url}{DICOMWEB_ROOT.rstrip('/')}"

    def client(self, timeout_s: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout_s)

    def get_json(self, path: str, **params: Any) -> Any:
        with self.client() as client:
            response = client.get(path, params=params or None)
            response.raise_for_status()
            return response.json()

    def instances(self) -> list[str]:
        """Orthanc IDs of every stored instance."""
        ids: list[str] = self.get_json("/instances")
        return ids

    def count_instances(self) -> int:
        count: int = self.get_json("/statistics")["CountInstances"]
        return count

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """The instance's tags by keyword (Orthanc's simplified tags; sequences become lists of dicts)."""
        tags: dict[str, Any] = self.get_json(f"/instances/{instance_id}/simplified-tags")
        return tags

    def instance_file(self, instance_id: str) -> bytes:
        with self.client() as client:
            response = client.get(f"/instances/{instance_id}/file")
            response.raise_for_status()
            return response.content

    def instance_dataset(self, instance_id: str) -> Dataset:
        """The stored instance as pydicom reads it."""
        return pydicom.dcmread(io.BytesIO(self.instance_file(instance_id)))

    def jobs(self, job_type: str | None = None) -> list[dict[str, Any]]:
        """Orthanc's jobs (oldest first), of `job_type` if given (DicomModalityStore: a C-STORE it sent)."""
        jobs: list[dict[str, Any]] = self.get_json("/jobs", expand="")
        return [job for job in jobs if job_type is None or job["Type"] == job_type]

    def find(self, level: str, **query: str) -> list[str]:
        """Orthanc IDs at `level` (Patient, Study, Series, Instance) whose DICOM tags match `query` exactly."""
        with self.client() as client:
            response = client.post("/tools/find", json={"Level": level, "Query": query})
            response.raise_for_status()
            ids: list[str] = response.json()
            return ids

    def instance_by_uid(self, sop_instance_uid: str) -> str | None:
        found = self.find("Instance", SOPInstanceUID=sop_instance_uid)
        return found[0] if found else None

    def study_series(self, study_instance_uid: str) -> list[dict[str, Any]]:
        """The study's series (Orthanc's series records: MainDicomTags, Instances) or [] if the study is absent."""
        studies = self.find("Study", StudyInstanceUID=study_instance_uid)
        if not studies:
            return []
        series: list[dict[str, Any]] = self.get_json(f"/studies/{studies[0]}/series")
        return series

    def instances_of_modality(self, modality: str) -> list[str]:
        """Orthanc IDs of the instances in series of `modality` (for example "SR")."""
        ids: list[str] = []
        for series_id in self.find("Series", Modality=modality):
            ids.extend(self.get_json(f"/series/{series_id}")["Instances"])
        return ids

    def wait_for_instances(self, count: int, *, timeout_s: float = 60.0, modality: str | None = None) -> list[str]:
        """Wait until at least `count` instances (of `modality`, if given) are stored; their Orthanc IDs."""
        found: list[str] = []

        def enough() -> bool:
            nonlocal found
            found = self.instances_of_modality(modality) if modality else self.instances()
            return len(found) >= count

        wait_until(
            enough,
            what=f"{count} {modality or ''} instance(s) in Orthanc (have {len(found)})",
            timeout_s=timeout_s,
            every_s=0.25,
        )
        return found


class RemoteOrthanc(OrthancRest):
    """An Orthanc this code did not start (for example the compose profile's container)."""

    def __init__(self, url: str) -> None:
        self._url = url.rstrip("/")

    @property
    def url(self) -> str:
        return self._url


@dataclass
class OrthancServer(OrthancRest):
    """One Orthanc process with its own configuration, storage and log under `workdir`."""

    workdir: Path
    ae_title: str = "ORTHANC"
    modalities: dict[str, DicomPeer] = field(default_factory=dict)
    extra_config: dict[str, Any] = field(default_factory=dict)
    lua_scripts: list[Path] = field(default_factory=list)
    host: str = "127.0.0.1"
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.plugin = require_orthanc()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage = self.workdir / "storage"
        self.config_path = self.workdir / "orthanc.json"
        self.log_path = self.workdir / "orthanc.log"

    # --- configuration -------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "Name": f"test-{self.ae_title}",
            "StorageDirectory": str(self.storage),
            "IndexDirectory": str(self.storage),
            "StorageCompression": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,  # loopback only, so no credentials are needed
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomModalities": {name: peer.as_modality() for name, peer in self.modalities.items()},
            "DicomModalitiesInDatabase": False,
            "Plugins": [str(self.plugin)],
            "DicomWeb": {"Enable": True, "Root": DICOMWEB_ROOT, "EnableWado": True, "Ssl": False},
            "LuaScripts": [str(path) for path in self.lua_scripts],
            "ConcurrentJobs": 2,
            "HttpThreadsCount": 8,
            "SaveJobs": False,
        }
        config.update(self.extra_config)
        return config

    def tell_about(self, name: str, peer: DicomPeer) -> None:
        """Add (or replace) a DICOM modality: written to the configuration, and applied at once if running."""
        self.modalities[name] = peer
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        if self.running:
            response = self.client().put(
                f"/modalities/{name}", json={"AET": peer.ae_title, "Host": peer.host, "Port": peer.port}
            )
            response.raise_for_status()

    # --- lifecycle -----------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def peer(self) -> DicomPeer:
        """Orthanc itself as a DICOM destination (for example for the service's `dicom://AET@host:port`)."""
        return DicomPeer(self.ae_title, self.host, self.dicom_port)

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> OrthancServer:
        if self.running:
            return self
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [ORTHANC_BINARY, str(self.config_path)],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            wait_until(
                self.ready, what=f"Orthanc on http {self.http_port} / dicom {self.dicom_port}", timeout_s=timeout_s
            )
        except AssertionError as error:
            self.stop()
            raise AssertionError(f"{error}\n--- orthanc.log (tail) ---\n{self.log_tail()}") from None
        return self

    def ready(self) -> bool:
        if not self.running:
            raise AssertionError(f"Orthanc exited with {self.process and self.process.returncode}:\n{self.log_tail()}")
        try:
            answered = httpx.get(f"{self.url}/system", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False
        return answered and port_open(self.host, self.dicom_port)

    def stop(self, timeout_s: float = 20.0, *, graceful: bool = True) -> None:
        """Shut Orthanc down (SIGTERM, then SIGKILL; only SIGKILL unless `graceful`: a crash) and wait until both its
        ports are closed. A graceful stop takes a few seconds (Orthanc finishes its DICOM server's loop)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        wait_until(
            lambda: not port_open(self.host, self.http_port) and not port_open(self.host, self.dicom_port),
            what="Orthanc's ports to close",
            timeout_s=10,
        )

    def restart(self) -> OrthancServer:
        self.stop()
        return self.start()

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else "(no log)"


# --- dcmtk, the sending modality ---------------------------------------------------------------------------------
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")  # explicit, implicit VR little endian
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"


def sop_class_and_syntax(path: Path) -> tuple[str, str]:
    """The file's SOP Class UID and transfer syntax (implicit VR little endian when it has no meta header)."""
    dataset = pydicom.dcmread(path, force=True, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    meta = getattr(dataset, "file_meta", None)
    syntax = str(getattr(meta, "TransferSyntaxUID", "") or IMPLICIT_VR_LITTLE_ENDIAN)
    return str(dataset.SOPClassUID), syntax


def storescu_profile(files: Sequence[Path], config_path: Path) -> Path:
    """A storescu association profile that proposes, for each SOP class sent, each file's own transfer syntax in its
    own presentation context plus one with the uncompressed syntaxes: what a modality sending as-stored proposes.
    (storescu's own defaults propose uncompressed only, and it cannot decompress JPEG to fall back.)"""
    contexts: list[tuple[str, str]] = []
    for path in files:
        sop_class, syntax = sop_class_and_syntax(path)
        wanted = [(sop_class, "uncompressed")] if syntax in UNCOMPRESSED else [(sop_class, syntax)]
        wanted.append((sop_class, "uncompressed"))
        contexts += [entry for entry in dict.fromkeys(wanted) if entry not in contexts]
    if len(contexts) > 128:
        raise ValueError(f"{len(contexts)} presentation contexts, an association holds at most 128")
    syntaxes = sorted({syntax for _, syntax in contexts if syntax != "uncompressed"})
    lines = ["[[TransferSyntaxes]]", "[uncompressed]"]
    lines += [f"TransferSyntax{n} = {uid}" for n, uid in enumerate(UNCOMPRESSED, 1)]
    for number, uid in enumerate(syntaxes):
        lines += [f"[ts{number}]", f"TransferSyntax1 = {uid}"]
    names = {uid: f"ts{number}" for number, uid in enumerate(syntaxes)} | {"uncompressed": "uncompressed"}
    lines += ["[[PresentationContexts]]", "[files]"]
    lines += [f"PresentationContext{n} = {sop}\\{names[syntax]}" for n, (sop, syntax) in enumerate(contexts, 1)]
    lines += ["[[Profiles]]", "[AsStored]", "PresentationContexts = files"]
    config_path.write_text("\n".join(lines) + "\n")
    return config_path


def storescu(
    files: Sequence[Path],
    *,
    host: str,
    port: int,
    called_ae: str,
    calling_ae: str = "STORESCU",
    keep_going: bool = False,
    timeout_s: float = 120.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Send `files` in one association with dcmtk's storescu, each in its own transfer syntax (`storescu_profile`).

    A file without preamble or meta header is read as a bare data set. `keep_going` (`-nh`): a refused instance
    does not stop the ones after it, and storescu then exits 0 even when some were refused (read its output).
    `check`: AssertionError with storescu's output unless it exited 0.
    """
    require_dcmtk("storescu")
    with tempfile.TemporaryDirectory(prefix="storescu-") as folder:
        profile = storescu_profile(files, Path(folder) / "storescu.cfg")
        args = ["storescu", "-xf", str(profile), "AsStored", "-aet", calling_ae, "-aec", called_ae]
        args += ["-to", "30", "-ta", "30", "-td", "60", *(["-nh"] if keep_going else [])]
        result = subprocess.run(
            [*args, host, str(port), *map(str, files)], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    if check and result.returncode != 0:
        raise AssertionError(f"storescu exited {result.returncode}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    return result


def echoscu(
    *, host: str, port: int, called_ae: str, calling_ae: str = "ECHOSCU", timeout_s: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """One C-ECHO with dcmtk's echoscu (returncode 0 when the association was accepted and answered)."""
    require_dcmtk("echoscu")
    args = ["echoscu", "-aet", calling_ae, "-aec", called_ae, "-to", "10", "-ta", "10", host, str(port)]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)


# --- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., OrthancServer]]:
    """Make (unstarted) Orthanc servers under the test's tmp folder; every one is stopped after the test."""
    made: list[OrthancServer] = []

    def make(name: str = "orthanc", **options: Any) -> OrthancServer:
        server = OrthancServer(tmp_path / name, **options)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop(graceful=False)  # the test is over: no need to wait for a clean shutdown


@pytest.fixture
def orthanc(orthanc_factory: Callable[..., OrthancServer]) -> OrthancServer:
    """A running Orthanc (AE title ORTHANC) on loopback, stopped after the test."""
    return orthanc_factory().start()
