"""Settings from the environment, provider choice, loud start-up failures, and no torch in the service."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from pydantic import ValidationError
from service_support import TINY_RECORD, build_tiny_model, tiny_model

import service.model
from medcore.imaging import DEFAULT_MAX_PIXELS
from medcore.record import RecordError
from service.config import BUNDLED_MODEL, Settings, usable_cores
from service.model import CPU, CUDA, ModelLoadError, choose_provider, load_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("SERVE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    bundled = REPO / "models" / "pneumoniamnist-convnext_atto" / "1.0.0" / "model.onnx"
    assert settings.model_path is None  # the model directory, not one file
    assert settings.model_dir == REPO / "models" == bundled.parents[2] == BUNDLED_MODEL.parents[2]
    assert (settings.default_model, settings.variant, settings.deadline_ms) == (None, "auto", 2000.0)
    assert (settings.max_pending, settings.max_files, settings.drain_timeout_s) == (64, 16, 15.0)
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert (settings.max_batch_size, settings.max_batch_delay_ms, settings.queue_limit) == (None, None, 256)
    assert settings.batch_limits("CPUExecutionProvider") == (16, 0.005)  # None: by provider (16 on the CPU)
    assert settings.max_body_bytes == 20 * 1024 * 1024
    assert settings.max_image_pixels == DEFAULT_MAX_PIXELS
    assert (settings.provider, settings.intra_op_threads, settings.log_level) == ("auto", 0, "info")
    assert settings.decode_threads == 0
    assert settings.decode_workers >= 1  # one per usable core


def test_settings_come_from_serve_environment_variables(clean_env: pytest.MonkeyPatch) -> None:
    values = {
        "SERVE_MODEL_PATH": "/models/x.onnx",
        "SERVE_HOST": "127.0.0.1",
        "SERVE_PORT": "9001",
        "SERVE_MAX_BATCH_SIZE": "32",
        "SERVE_MAX_BATCH_DELAY_MS": "2.5",
        "SERVE_QUEUE_LIMIT": "8",
        "SERVE_MAX_BODY_BYTES": "1000",
        "SERVE_MAX_IMAGE_PIXELS": "4096",
        "SERVE_PROVIDER": "CPU",
        "SERVE_INTRA_OP_THREADS": "2",
        "SERVE_DECODE_THREADS": "3",
        "SERVE_LOG_LEVEL": "DEBUG",
    }
    for name, value in values.items():
        clean_env.setenv(name, value)
    settings = Settings()
    assert settings.model_path == Path("/models/x.onnx")
    assert (settings.host, settings.port) == ("127.0.0.1", 9001)
    assert (settings.max_batch_size, settings.max_batch_delay_ms, settings.queue_limit) == (32, 2.5, 8)
    assert (settings.max_body_bytes, settings.max_image_pixels) == (1000, 4096)
    assert (settings.provider, settings.intra_op_threads, settings.log_level) == ("cpu", 2, "debug")
    assert settings.decode_workers == 3


@pytest.mark.parametrize(
    ("name", "value"),
    [("SERVE_PROVIDER", "gpu"), ("SERVE_MAX_BATCH_SIZE", "0"), ("SERVE_PORT", "http"), ("SERVE_LOG_LEVEL", "loud")],
)
def test_invalid_settings_are_refused(clean_env: pytest.MonkeyPatch, name: str, value: str) -> None:
    clean_env.setenv(name, value)
    with pytest.raises(ValidationError, match=name.removeprefix("SERVE_").lower()):
        Settings()


@pytest.mark.parametrize(
    ("value", "on_cpu", "on_cuda"), [("auto", True, False), ("ON", True, True), ("off", False, False)]
)
def test_inline_idle_runs_default_to_the_cpu_only(
    clean_env: pytest.MonkeyPatch, value: str, on_cpu: bool, on_cuda: bool
) -> None:
    clean_env.setenv("SERVE_INLINE_IDLE", value)
    settings = Settings()
    assert (settings.inline_when_idle(CPU), settings.inline_when_idle(CUDA)) == (on_cpu, on_cuda)
    # Lanes: one per usable core where images run inline, one where they do not, unless set.
    assert settings.model_lanes(CPU) == (usable_cores() if on_cpu else 1)
    assert settings.model_lanes(CUDA) == (usable_cores() if on_cuda else 1)
    clean_env.setenv("SERVE_MODEL_CONCURRENCY", "3")
    assert Settings().model_lanes(CUDA) == 3


def test_provider_choice() -> None:
    # Pure choice logic: this machine has no GPU, so CUDA's presence is given as a list here.
    assert choose_provider("cpu", [CUDA, CPU]) == CPU
    assert choose_provider("auto", [CPU]) == CPU
    assert choose_provider("auto", [CUDA, CPU]) == CUDA
    assert choose_provider("cuda", [CUDA, CPU]) == CUDA
    with pytest.raises(ModelLoadError, match=r"'cuda' was requested but onnxruntime offers only \['CPUExec"):
        choose_provider("cuda", [CPU])
    with pytest.raises(ModelLoadError, match=r"Invalid provider 'tpu'\. Only auto, cpu and cuda are supported\."):
        choose_provider("tpu", [CPU])


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="CUDA is available here")
def test_asking_for_cuda_without_it_fails_at_load() -> None:
    with pytest.raises(ModelLoadError, match="install onnxruntime-gpu"):
        load_model(tiny_model(), provider="cuda")


def test_the_loaded_model_reads_its_record_and_chooses_cpu_here() -> None:
    model = load_model(tiny_model(), provider="auto", intra_op_threads=1)
    assert model.record.labels == ("pneumonia",)
    assert model.input_shape == (1, 28, 28)
    assert model.provider == (CUDA if CUDA in ort.get_available_providers() else CPU)
    model.warm_up()


def test_auto_threads_give_a_fast_model_one_thread_and_a_slow_one_every_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cores = usable_cores()
    assert load_model(tiny_model(), provider="cpu").intra_op_threads == 1  # a tiny model: well under the limit
    assert load_model(tiny_model(), provider="cpu", intra_op_threads=3).intra_op_threads == 3  # set: kept
    assert load_model(tiny_model(), provider="cpu").shared_session is None  # one thread already: nothing to share
    monkeypatch.setattr(service.model, "SINGLE_THREAD_LIMIT_MS", 0.0)  # every model counts as slow
    slow = load_model(tiny_model(), provider="cpu")
    assert slow.intra_op_threads == (cores if cores > 1 else 1)
    slow.warm_up()
    # A slow model on several cores also keeps a one-thread session for calls made while another runs.
    assert (slow.shared_session is not None) == (cores > 1)
    batch = np.random.default_rng(0).random((2, *slow.input_shape), dtype=np.float32)
    np.testing.assert_allclose(slow.predict_shared(batch), slow.predict(batch), atol=1e-6)


def broken_record(**changes: object) -> str:
    record = {**TINY_RECORD, "schema_version": 1, **changes}
    return json.dumps({key: value for key, value in record.items() if value is not None})


@pytest.mark.parametrize(
    ("record_json", "message"),
    [
        (None, "model record is missing"),
        ("{not json", "model record is not valid JSON"),
        (broken_record(thresholds=None), "field 'thresholds'"),
        (broken_record(thresholds={"pneumonia": 2.0}), r"thresholds must lie in \[0, 1\]"),
        (broken_record(schema_version=99), "field 'schema_version' is 99"),
        (broken_record(preprocessing={**TINY_RECORD["preprocessing"], "height": 64}), "axis 2 is 28"),
    ],
    ids=["missing", "not-json", "no-thresholds", "bad-threshold", "future-version", "wrong-input-size"],
)
def test_a_bad_record_fails_loudly_at_load(tmp_path: Path, record_json: str | None, message: str) -> None:
    path = build_tiny_model(tmp_path / "model.onnx", record_json, with_record=record_json is not None)
    with pytest.raises((RecordError, ModelLoadError), match=message) as failure:
        load_model(path)
    if isinstance(failure.value, RecordError):
        assert str(path) in str(failure.value)


def test_a_missing_model_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="SERVE_MODEL_PATH"):
        load_model(tmp_path / "absent.onnx")


def run_service(env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("SERVE_")}
    return subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=REPO,
        env={**clean, "SERVE_HOST": "127.0.0.1", "SERVE_PORT": "0", **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_python_m_service_refuses_to_start_without_a_record(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "model.onnx", with_record=False)
    result = run_service({"SERVE_MODEL_PATH": str(path)})
    assert result.returncode != 0
    assert "model record is missing" in result.stderr
    assert "Application startup failed" in result.stderr


def test_python_m_service_refuses_bad_settings() -> None:
    result = run_service({"SERVE_MAX_BATCH_SIZE": "lots"})
    assert result.returncode != 0
    assert "invalid SERVE_* settings" in result.stderr
    assert "max_batch_size" in result.stderr


def test_the_service_never_imports_torch_onnx_trainer_or_export() -> None:
    code = (
        "import sys, service.__main__, service.app; "
        "bad = sorted(m for m in ('torch', 'onnx', 'trainer', 'export') if m in sys.modules); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
