"""The model registry: every served model (name, version, variant file), each with its own batcher.

Read at start from `SERVE_MODEL_DIR/<name>/<version>/` (one `model*.onnx` per variant, see
`medcore.record.VARIANT_FILES`), or from the single file `SERVE_MODEL_PATH`. Directory names must
equal the record's name and version. The default model is `SERVE_DEFAULT_MODEL` ("name" or
"name/version"); without it, the only model, else the first name in sorted order. A name without a
version means its highest version (numeric parts compare as numbers: 1.10.0 > 1.9.0).

The interface every route uses (predict, model listing, Open Inference Protocol):

    registry: ModelRegistry = request.app.state.runtime.registry   # or the `RegistryDep` dependency
    served = registry.get("name")              # or registry.get("name", "1.0.0"), or registry.default
                                               # unknown name/version: ModelNotFoundError (404 model_not_found)
    served.name, served.version, served.record, served.provider, served.variant, served.variants
    served.input_shape                         # (C, H, W) of the float32 input
    served.public_record()                     # the record as JSON, without file-system paths or file names
    result = await served.infer(chw)           # chw: float32 [C, H, W]; BatchResult.probabilities is [L]
    done = await served.infer_bytes(data)      # encoded image bytes: decoded in the bounded decode pool first;
                                               # done.result (a BatchResult), done.preprocess_s
    # both take deadline= (time.monotonic() seconds; DeadlineExceededError -> 503 when still queued then)
    # and explain=True (BatchResult.heatmaps [L, h, w]; needs served.can_explain, else ExplainUnavailableError)

Errors: ImageError (4xx, its own code), QueueFullError / NotReadyError / DeadlineExceededError (503),
BatchError (500). `service.errors` turns each into its JSON response.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medcore.imaging import DEFAULT_MAX_DECODE_BYTES, load_model_input
from medcore.record import VARIANT_FILES, ModelRecord
from service.batching import BatchResult, DeadlineExceededError, MicroBatcher, moving_average
from service.config import Settings
from service.errors import ServiceError
from service.model import CUDA, LoadedModel, ModelLoadError, choose_provider, load_model

# (name, version, images, seconds) of each model call: the metrics label each model's own series.
ModelBatchObserver = Callable[[str, str, int, float], None]
logger = logging.getLogger(__name__)

# The decode-time estimate of when an image would be answered is built from averages; refusing when the estimate
# times this passes the deadline keeps the slow tail inside it too (2x overload, 2 min, bench/overload.py:
# accepted p99 2,048 ms against a 2,000 ms deadline without the margin).
ESTIMATE_MARGIN = 1.2

# Provenance keys whose values name files or folders on the build machine, at any depth.
PRIVATE_KEYS = frozenset(
    {"path", "paths", "output_dir", "resume", "cache_dir", "labels_file", "data_path", "checkpoint", "root"}
)
_FILE_SUFFIX = r"\.(onnx|pt|pth|ckpt|npz|npy|csv|json|ya?ml|dcm|png|jpe?g|tiff?|gz|zip|tar)$"
_PATH_LIKE = re.compile(r"^(/|~|\.{1,2}/|[A-Za-z]:[\\/])|^\S*[\\/]\S*$|^\S+" + _FILE_SUFFIX, re.IGNORECASE)


class ModelNotFoundError(ServiceError):
    """No served model has this name (or this version); the client named the wrong one."""

    status = 404
    code = "model_not_found"


class ExplainUnavailableError(ServiceError):
    """The model has no heatmaps output, so it cannot explain its answers."""

    status = 422
    code = "explain_unavailable"


class InvalidInputError(ServiceError):
    """A tensor given to `infer` has the wrong dtype or shape for the model."""

    status = 400
    code = "invalid_input"


@dataclass
class ServedModel:
    """One model version being served: its loaded variant, its batcher, and the variants on disk."""

    model: LoadedModel
    batcher: MicroBatcher
    variants: tuple[str, ...]
    decoder: ThreadPoolExecutor
    max_pixels: int
    max_bytes: int = DEFAULT_MAX_DECODE_BYTES
    intended_use_gate: bool = True
    is_default: bool = False
    on_decode: Callable[[float], None] | None = None  # seconds spent decoding one image (the metric)
    recent_decode_s: float = field(default=0.0, init=False)  # moving average of the seconds one decode takes

    @property
    def record(self) -> ModelRecord:
        return self.model.record

    @property
    def name(self) -> str:
        return self.model.record.name

    @property
    def version(self) -> str:
        return self.model.record.version

    @property
    def provider(self) -> str:
        return self.model.provider

    @property
    def variant(self) -> str:
        return self.model.variant

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.model.input_shape

    @property
    def can_explain(self) -> bool:
        return self.model.has_heatmaps

    def public_record(self) -> dict[str, Any]:
        """The record as JSON, with build-machine paths and file names taken out of its provenance."""
        record = self.record.to_dict()
        record["provenance"] = strip_private(record["provenance"])
        return record

    def decode(self, data: bytes) -> np.ndarray:
        """Encoded image bytes -> float32 CHW input, with the record's preprocessing (blocking: run in a thread).

        Checks the memory budget from the headers first and, when the gate is on, the record's intended use."""
        return load_model_input(
            data,
            self.record.preprocessing,
            max_pixels=self.max_pixels,
            max_bytes=self.max_bytes,
            intended_use=self.record.intended_use if self.intended_use_gate else None,
        )

    async def infer(self, inputs: np.ndarray, *, deadline: float | None = None, explain: bool = False) -> BatchResult:
        """One float32 CHW input through the next batch of this model."""
        if explain and not self.can_explain:
            raise ExplainUnavailableError(f"model {self.name} {self.version} has no heatmaps output to explain with")
        expected = self.input_shape
        if inputs.dtype != np.float32 or tuple(inputs.shape) != expected:
            raise InvalidInputError(f"input must be float32 {list(expected)}, got {inputs.dtype} {list(inputs.shape)}")
        return await self.batcher.infer(inputs, deadline=deadline, explain=explain)

    async def infer_bytes(self, data: bytes, *, deadline: float | None = None, explain: bool = False) -> BytesResult:
        """Decode `data` in the decode pool, then run it: on that thread when the model is idle
        (`MicroBatcher.run_inline`), else in the next batch. The batcher knows an image is on its way meanwhile.

        An image is not decoded at all when its deadline passed while it waited for a decode thread, or when
        the model is busy and the time it has left is shorter than the work ahead of it plus its own decode
        and inference (recent averages): it would only expire in the queue, or be answered after its deadline.
        An idle model always takes it, so a model slower than the deadline still serves."""
        if explain and not self.can_explain:
            raise ExplainUnavailableError(f"model {self.name} {self.version} has no heatmaps output to explain with")
        submitted = time.perf_counter()

        def decode_and_run_if_idle() -> tuple[np.ndarray, float, BatchResult | None]:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DeadlineExceededError("the image waited for a decode thread past its deadline; retry shortly")
                ahead = self.batcher.expected_wait_s()
                wait = ahead + self.recent_decode_s + self.batcher.seconds_per_image
                if ahead > 0 and wait * ESTIMATE_MARGIN > left:  # an idle model always takes the image
                    raise DeadlineExceededError(
                        f"decoding, queueing and running the image would take about {wait * 1e3:.0f} ms, past "
                        f"its deadline ({left * 1e3:.0f} ms left); retry shortly"
                    )
            started = time.perf_counter()
            inputs = self.decode(data)
            decoded = time.perf_counter()
            seconds = decoded - started
            self.recent_decode_s = moving_average(self.recent_decode_s, seconds)
            if self.on_decode is not None:
                self.on_decode(seconds)
            return inputs, decoded - submitted, self.batcher.run_inline(inputs, explain=explain)

        # The copied context carries the request id into the decode thread's log lines.
        context = contextvars.copy_context()
        with self.batcher.preparing():
            inputs, preprocess_s, result = await asyncio.get_running_loop().run_in_executor(
                self.decoder, context.run, decode_and_run_if_idle
            )
        if result is None:
            result = await self.batcher.infer(inputs, deadline=deadline, explain=explain)
        return BytesResult(result, preprocess_s)


@dataclass(frozen=True)
class BytesResult:
    """What `ServedModel.infer_bytes` answers: the model's result and the seconds from submission to decoded
    input (waiting for a decode thread included)."""

    result: BatchResult
    preprocess_s: float


@dataclass
class ModelRegistry:
    """All served models, by name and version, and the default one."""

    entries: dict[str, dict[str, ServedModel]]
    default: ServedModel
    decoder: ThreadPoolExecutor

    @property
    def models(self) -> list[ServedModel]:
        """Every served model: names sorted, versions highest first."""
        return [m for name in sorted(self.entries) for m in _by_version(self.entries[name].values())]

    def get(self, name: str | None = None, version: str | None = None) -> ServedModel:
        """The model `name` (highest version unless `version`); the default model when `name` is None."""
        if name is None:
            return self.default
        versions = self.entries.get(name)
        if versions is None:
            raise ModelNotFoundError(f"no model named {name!r}; served models: {sorted(self.entries)}")
        if version is None:
            return _by_version(versions.values())[0]
        if version not in versions:
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}; it has {sorted(versions)}")
        return versions[version]

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self.models)

    @property
    def ready(self) -> bool:
        return all(m.batcher.ready for m in self.models)

    @property
    def alive(self) -> bool:
        return all(m.batcher.alive for m in self.models)

    @property
    def status(self) -> str:
        """Why the registry is not ready: the first model whose batcher is not, by name."""
        for m in self.models:
            if not m.batcher.ready:
                return f"{m.name} {m.version}: {m.batcher.status}" if len(self.models) > 1 else m.batcher.status
        return "ready"

    @property
    def depth(self) -> int:
        return sum(m.batcher.depth for m in self.models)

    def start(self) -> None:
        for m in self.models:
            m.batcher.start()

    def close(self, timeout_s: float = 10.0) -> None:
        for m in self.models:
            m.batcher.close(timeout_s)
        self.decoder.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class ModelFiles:
    """One <name>/<version> folder: the variant files present in it."""

    folder: Path
    files: dict[str, Path]


def find_models(model_dir: Path) -> list[ModelFiles]:
    """Every `<name>/<version>/` folder under `model_dir` holding at least one variant file."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist; set SERVE_MODEL_DIR or SERVE_MODEL_PATH")
    found = []
    for folder in sorted(p for p in model_dir.glob("*/*") if p.is_dir()):
        files = {v: folder / f for v, f in VARIANT_FILES.items() if (folder / f).is_file()}
        if files:
            found.append(ModelFiles(folder, files))
    if not found:
        raise ModelLoadError(f"no <name>/<version>/model.onnx under {model_dir}; set SERVE_MODEL_DIR or _PATH")
    return found


def choose_variant(requested: str, available: dict[str, Path], provider: str) -> str:
    """`auto`: fp16 on CUDA when that file exists, else fp32; fp32/fp16/int8 only when that file exists."""
    if requested == "auto":
        if provider == CUDA and "fp16" in available:
            return "fp16"
        if "fp32" in available:
            return "fp32"
        return next(iter(available))
    if requested not in VARIANT_FILES:
        raise ModelLoadError(f"Invalid variant {requested!r}. Only auto, fp32, fp16 and int8 are supported.")
    if requested not in available:
        raise ModelLoadError(f"variant {requested} ({VARIANT_FILES[requested]}) is missing; found {sorted(available)}")
    return requested


def build_registry(
    settings: Settings,
    on_batch: ModelBatchObserver | None = None,
    on_decode: Callable[[float], None] | None = None,
) -> ModelRegistry:
    """Load every model the settings name and give each a batcher (not started yet)."""
    decoder = ThreadPoolExecutor(max_workers=settings.decode_workers, thread_name_prefix="decode")
    provider = settings.provider
    make = partial(_serve_one, settings=settings, decoder=decoder, on_batch=on_batch, on_decode=on_decode)
    entries: dict[str, dict[str, ServedModel]] = {}
    if settings.model_path is not None:
        served = make(load_model(settings.model_path, provider=provider, intra_op_threads=settings.intra_op_threads))
        entries[served.name] = {served.version: served}
    else:
        import onnxruntime as ort

        chosen = choose_provider(provider, ort.get_available_providers())
        for found in find_models(settings.model_dir):
            try:
                variant = choose_variant(settings.variant, found.files, chosen)
            except ModelLoadError as exc:
                raise ModelLoadError(f"{found.folder.relative_to(settings.model_dir)}: {exc}") from None
            loaded = load_model(
                found.files[variant],
                provider=provider,
                intra_op_threads=settings.intra_op_threads,
                expected_variant=variant,
            )
            name, version = found.folder.parent.name, found.folder.name
            if (loaded.record.name, loaded.record.version) != (name, version):
                raise ModelLoadError(
                    f"folder {name}/{version} holds a model whose record says {loaded.record.name}/"
                    f"{loaded.record.version}; the folder names must equal the record's name and version"
                )
            entries.setdefault(name, {})[version] = make(loaded, variants=tuple(found.files))
    registry = ModelRegistry(entries=entries, default=_pick_default(entries, settings.default_model), decoder=decoder)
    registry.default.is_default = True
    return registry


def _serve_one(
    loaded: LoadedModel,
    *,
    settings: Settings,
    decoder: ThreadPoolExecutor,
    on_batch: ModelBatchObserver | None,
    on_decode: Callable[[float], None] | None = None,
    variants: tuple[str, ...] | None = None,
) -> ServedModel:
    batcher = MicroBatcher(
        loaded.predict,
        max_batch_size=settings.max_batch_size,
        max_batch_delay_s=settings.max_batch_delay_ms / 1e3,
        queue_limit=settings.queue_limit,
        warm_up=loaded.warm_up,
        on_batch=partial(on_batch, loaded.record.name, loaded.record.version) if on_batch else None,
        explain=loaded.predict_with_heatmaps if loaded.has_heatmaps else None,
        fail_batch=settings.fault_inject_batch,
        inline_when_idle=settings.inline_when_idle(loaded.provider),
        concurrency=settings.model_lanes(loaded.provider),
        predict_shared=loaded.predict_shared,
    )
    return ServedModel(
        model=loaded,
        batcher=batcher,
        variants=variants or (loaded.variant,),
        decoder=decoder,
        max_pixels=settings.max_image_pixels,
        max_bytes=settings.max_decode_bytes,
        intended_use_gate=settings.intended_use_gate,
        on_decode=on_decode,
    )


def _pick_default(entries: dict[str, dict[str, ServedModel]], wanted: str | None) -> ServedModel:
    if wanted is None:
        return _by_version(entries[sorted(entries)[0]].values())[0]
    name, _, version = wanted.partition("/")
    versions = entries.get(name)
    if versions is None or (version and version not in versions):
        served = [f"{m.name}/{m.version}" for vs in entries.values() for m in vs.values()]
        raise ModelLoadError(f"SERVE_DEFAULT_MODEL={wanted!r} is not served; served models: {sorted(served)}")
    return versions[version] if version else _by_version(versions.values())[0]


def _version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"[.\-+_]", version))


def _by_version(models: Any) -> list[ServedModel]:
    """Highest version first."""
    return sorted(models, key=lambda m: _version_key(m.version), reverse=True)


def strip_private(value: Any) -> Any:
    """Drop keys that hold paths (`PRIVATE_KEYS`) and strings that look like a path or a file name.

    `files` maps of {file name: hash} keep only their hashes (as `file_hashes`), so the data
    stays identifiable without naming where the build machine kept it.
    """
    if isinstance(value, dict):
        cleaned = {}
        for key, item in value.items():
            if key == "files" and isinstance(item, dict):
                cleaned["file_hashes"] = sorted(str(v) for v in item.values())
            elif key not in PRIVATE_KEYS and not _looks_like_path(item):
                cleaned[key] = strip_private(item)
        return cleaned
    if isinstance(value, list):
        return [strip_private(v) for v in value if not _looks_like_path(v)]
    return value


def _looks_like_path(value: Any) -> bool:
    return isinstance(value, str) and bool(_PATH_LIKE.search(value))
