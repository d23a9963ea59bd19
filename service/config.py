"""Service settings: one pydantic-settings class, read from `SERVE_*` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from medcore.imaging import DEFAULT_MAX_DECODE_BYTES, DEFAULT_MAX_PIXELS
from service.dicom.addresses import check_ae_title, parse_callers, parse_destination

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO_ROOT / "models"
BUNDLED_MODEL = MODEL_DIR / "pneumoniamnist-convnext_atto" / "1.0.0" / "model.onnx"

Provider = Literal["auto", "cpu", "cuda"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]
Variant = Literal["auto", "fp32", "fp16", "int8"]
LogFormat = Literal["json", "text"]
RouteGroup = Literal["health", "metrics", "docs", "ui"]
InlineIdle = Literal["auto", "on", "off"]


class Settings(BaseSettings):
    """Everything an operator can set; `SERVE_MAX_BATCH_SIZE=32` sets `max_batch_size`."""

    model_config = SettingsConfigDict(env_prefix="SERVE_", frozen=True, protected_namespaces=())

    model_dir: Path = Field(default=MODEL_DIR, description="model directory: <name>/<version>/model.onnx (+ variants)")
    model_path: Path | None = Field(default=None, description="serve this one ONNX file instead of model_dir")
    default_model: str | None = Field(default=None, description="'name' or 'name/version'; else the only/first one")
    variant: Variant = Field(default="auto", description="auto (fp16 on CUDA if there, else fp32), fp32, fp16, int8")
    deadline_ms: float = Field(default=2000.0, gt=0, description="work still queued this long after arrival: 503")
    max_pending: int = Field(default=64, ge=1, description="predict requests being read, decoded or queued before 503")
    max_files: int = Field(default=16, ge=1, description="most `file` parts in one multipart request")
    drain_timeout_s: float = Field(default=15.0, ge=0, description="on SIGTERM, how long queued work may drain")
    host: str = Field(default="0.0.0.0", description="address to bind; 127.0.0.1 behind a local TLS proxy")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port; 0 picks a free one")
    max_batch_size: int = Field(default=16, ge=1, description="most images merged into one onnxruntime call")
    max_batch_delay_ms: float = Field(default=5.0, ge=0, description="longest wait for a batch to fill")
    inline_idle: InlineIdle = Field(
        default="auto",
        description="run an image on its decode thread when the model is idle and nothing is queued, instead of "
        "handing it to the batch worker; auto = on for the CPU provider, off on CUDA (where batches pay)",
    )
    model_concurrency: int = Field(
        default=0,
        ge=0,
        description="model calls at once per model (batches and inline runs); 0 = one per usable core where "
        "idle images run inline (the CPU: two single-image calls beat one call split over two cores), else 1",
    )
    queue_limit: int = Field(default=256, ge=1, description="images waiting for the model before 503")
    max_body_bytes: int = Field(default=20 * 1024 * 1024, ge=1, description="largest request body")
    max_image_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1, description="decompression-bomb guard")
    max_decode_bytes: int = Field(
        default=DEFAULT_MAX_DECODE_BYTES, ge=1, description="memory budget per image, from its headers, before decoding"
    )
    intended_use_gate: bool = Field(
        default=True, description="refuse DICOMs outside the record's intended use (422 outside_intended_use)"
    )
    provider: Provider = Field(default="auto", description="onnxruntime execution provider")
    intra_op_threads: int = Field(
        default=0,
        ge=0,
        description="onnxruntime intra-op threads; 0 = by measurement at start on the CPU: one when a batch-1 "
        "inference takes under 25 ms on one thread (the other cores decode), else one per usable core",
    )
    decode_threads: int = Field(default=0, ge=0, description="images decoded at once; 0 = one per usable core")
    log_level: LogLevel = Field(default="info", description="lowest level logged")
    log_format: LogFormat = Field(default="json", description="json: one JSON object per line; text: for a terminal")
    api_keys: SecretStr = Field(default=SecretStr(""), description="comma-separated API keys; empty = no auth")
    api_keys_file: FilePath | None = Field(default=None, description="file with one API key per line (# comments)")
    api_keys_reload_s: float = Field(
        default=10.0,
        ge=0,
        description="check the key file for changes this often and reload it (also on SIGHUP); 0 = SIGHUP only",
    )
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(),
        description="comma-separated browser origins (https://pacs.example.org) allowed cross-origin calls; "
        "empty = none: every CORS preflight is refused",
    )
    auth_open_routes: Annotated[tuple[RouteGroup, ...], NoDecode] = Field(
        default=("health", "metrics", "ui"),
        description="route groups open without a key: health, metrics, docs, ui (the page holds no data)",
    )
    limit_concurrency: int | None = Field(
        default=512, ge=1, description="uvicorn: connections + tasks at once before it answers 503"
    )
    timeout_keep_alive_s: int = Field(
        default=90,
        ge=1,
        description="uvicorn: close idle keep-alive connections after this many seconds; above the idle expiry of "
        "client pools and load balancers (httpx 5 s, cloud LBs 60 s, nginx 75 s), so the client closes an idle "
        "connection first and never sends on one the server is closing (a reset, no answer)",
    )
    max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, description="uvicorn (h11_max_incomplete_event_size): largest request head"
    )
    ssl_certfile: FilePath | None = Field(default=None, description="serve HTTPS with this PEM certificate")
    ssl_keyfile: FilePath | None = Field(default=None, description="the certificate's PEM private key")
    dicom_port: int | None = Field(
        default=None, ge=0, le=65535, description="DICOM C-STORE SCP port (unset: no DIMSE node; 0 picks a free one)"
    )
    dicom_ae_title: str = Field(default="MEDIMAGING", description="the DICOM node's own AE title")
    dicom_allowed_callers: str = Field(
        default="", description="comma-separated AET@host (or AET@*) allowed to associate; empty = any caller"
    )
    dicom_model: str | None = Field(default=None, description="'name' or 'name/version' DICOM instances run on")
    dicom_destination: str | None = Field(
        default=None,
        description="where results go: dicom://AET@host:port (C-STORE) or an http(s):// DICOMweb base URL "
        "(STOW-RS); unset: the DICOM node (C-STORE SCP and /dicomweb) is off",
    )
    dicom_outbox: Path = Field(
        default=Path("dicom-outbox"), description="durable outbox folder (holds PHI: created mode 0700)"
    )
    dicom_heatmap_sc: bool = Field(
        default=False, description="also send a Secondary Capture with the heatmap burned in (needs heatmaps)"
    )
    dicom_max_pdu: int = Field(default=65536, ge=0, description="largest P-DATA PDU received (0 = no limit)")
    dicom_max_associations: int = Field(default=8, ge=1, description="DICOM associations at once before rejection")
    dicom_timeout_s: float = Field(default=30.0, gt=0, description="DICOM ACSE, DIMSE and network timeouts")
    dicom_max_inbox: int = Field(
        default=10000, ge=1, description="C-STORE instances accepted and not yet run before 0xA700 (retry later)"
    )
    dicom_retry_base_s: float = Field(default=1.0, gt=0, description="first retry delay of a failed result send")
    dicom_retry_cap_s: float = Field(default=30.0, gt=0, description="longest delay between send retries")
    dicom_dead_letter_after_s: float = Field(
        default=86400.0, gt=0, description="a result still unsent this long after it was queued is a dead letter"
    )
    fault_inject_batch: int | None = Field(
        default=None,
        ge=1,
        description="TEST ONLY, never set in production: the N-th batch of each model raises inside the worker "
        "(its requests get 500 inference_failed); for the fault-injection tests",
    )

    @field_validator("dicom_ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return check_ae_title(value, "SERVE_DICOM_AE_TITLE")

    @field_validator("dicom_allowed_callers")
    @classmethod
    def _callers(cls, value: str) -> str:
        parse_callers(value)
        return value

    @field_validator("dicom_destination")
    @classmethod
    def _destination(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            parse_destination(value)
            return value.strip()
        return None

    @model_validator(mode="after")
    def _dicom_needs_destination(self) -> Settings:
        if self.dicom_port is not None and self.dicom_destination is None:
            raise ValueError(
                "SERVE_DICOM_PORT is set but SERVE_DICOM_DESTINATION is not: set where the results go "
                "(dicom://AET@host:port or an http(s):// DICOMweb base URL)"
            )
        return self

    @property
    def dicom_enabled(self) -> bool:
        """The DICOM node runs when its results have somewhere to go."""
        return self.dicom_destination is not None

    @field_validator("auth_open_routes", mode="before")
    @classmethod
    def _split_groups(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())
        return value

    def inline_when_idle(self, provider: str) -> bool:
        """Whether a model served by this onnxruntime provider runs idle-time images inline (`inline_idle`)."""
        return self.inline_idle == "on" or (self.inline_idle == "auto" and provider != "CUDAExecutionProvider")

    def model_lanes(self, provider: str) -> int:
        """Model calls at once for a model served by this provider (`model_concurrency`)."""
        if self.model_concurrency:
            return self.model_concurrency
        return usable_cores() if self.inline_when_idle(provider) else 1

    @property
    def decode_workers(self) -> int:
        return self.decode_threads or usable_cores()

    @field_validator("provider", "log_level", "variant", "log_format", "inline_idle", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return max(1, len(usable))
