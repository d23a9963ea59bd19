"""Service settings: one pydantic-settings class, read from `SERVE_*` environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from medcore.imaging import DEFAULT_MAX_PIXELS

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO_ROOT / "models"
BUNDLED_MODEL = MODEL_DIR / "pneumoniamnist-convnext_atto" / "1.0.0" / "model.onnx"

Provider = Literal["auto", "cpu", "cuda"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class Settings(BaseSettings):
    """Everything an operator can set; `SERVE_MAX_BATCH_SIZE=32` sets `max_batch_size`."""

    model_config = SettingsConfigDict(env_prefix="SERVE_", frozen=True, protected_namespaces=())

    model_path: Path = Field(default=BUNDLED_MODEL, description="ONNX file with the model record in its metadata")
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=0, le=65535)
    max_batch_size: int = Field(default=16, ge=1, description="most images merged into one onnxruntime call")
    max_batch_delay_ms: float = Field(default=5.0, ge=0, description="longest wait for a batch to fill")
    queue_limit: int = Field(default=256, ge=1, description="images waiting for the model before 503")
    max_body_bytes: int = Field(default=20 * 1024 * 1024, ge=1, description="largest request body")
    max_image_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1, description="decompression-bomb guard")
    provider: Provider = "auto"
    intra_op_threads: int = Field(default=0, ge=0, description="onnxruntime intra-op threads; 0 = its default")
    decode_threads: int = Field(default=0, ge=0, description="images decoded at once; 0 = one per usable core")
    log_level: LogLevel = "info"

    @property
    def decode_workers(self) -> int:
        if self.decode_threads:
            return self.decode_threads
        usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
        return len(usable)

    @field_validator("provider", "log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value
