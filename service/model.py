"""Load one ONNX file and its record, choose the onnxruntime provider, run batches (with heatmaps if asked)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from medcore.record import ONNX_HEATMAP_OUTPUT_NAME as HEATMAP_NAME
from medcore.record import ONNX_INPUT_NAME as INPUT_NAME
from medcore.record import ONNX_METADATA_KEY, VARIANT_FILES, ModelRecord, RecordError
from medcore.record import ONNX_OOD_OUTPUT_NAME as OOD_NAME
from medcore.record import ONNX_OUTPUT_NAME as OUTPUT_NAME
from service.config import usable_cores

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
# Auto threads (intra_op_threads=0) on the CPU: a model whose batch-1 inference on one thread takes less than
# this gains little from intra-op parallelism and loses the core the decoders need (measured on 2 cores,
# 28-px convnext_atto: 8 ms on one thread, 9-16 ms on two); a slower model gets one thread per usable core.
SINGLE_THREAD_LIMIT_MS = 25.0
TIMED_RUNS = 5

logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The model file cannot be served: missing, wrong contract, or the provider is unavailable."""


def choose_provider(requested: str, available: Sequence[str]) -> str:
    """The onnxruntime provider for `requested` ("auto", "cpu" or "cuda") given what is installed."""
    if requested == "cpu":
        return CPU
    if requested == "cuda":
        if CUDA not in available:
            raise ModelLoadError(
                f"provider 'cuda' was requested but onnxruntime offers only {list(available)}; "
                "install onnxruntime-gpu with a working CUDA, or set SERVE_PROVIDER=cpu or auto"
            )
        return CUDA
    if requested == "auto":
        return CUDA if CUDA in available else CPU
    raise ModelLoadError(f"Invalid provider {requested!r}. Only auto, cpu and cuda are supported.")


@dataclass(frozen=True)
class LoadedModel:
    """An onnxruntime session together with the record that says how to feed and read it."""

    session: ort.InferenceSession
    record: ModelRecord
    provider: str
    has_heatmaps: bool = False
    has_ood: bool = False  # the graph outputs "ood_score" [N] (and the record says how to read it)
    intra_op_threads: int = 0  # what the session runs with (0: onnxruntime's own choice, as on CUDA)
    # A one-thread session of the same file for calls made while another call runs (auto threads on the CPU
    # when `session` has several): two one-thread calls on two cores beat two calls that each split over both.
    shared_session: ort.InferenceSession | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        pre = self.record.preprocessing
        return (pre.channels, pre.height, pre.width)

    @property
    def variant(self) -> str:
        return self.record.variant

    def predict(self, batch: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """float32 [N, C, H, W] -> probabilities [N, L], or (probabilities, ood_score [N]) when `has_ood`."""
        return self._run(self.session, batch)

    def predict_shared(self, batch: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """`predict` for a call made while another one runs: on the one-thread session when there is one."""
        return self._run(self.shared_session or self.session, batch)

    def _run(self, session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        if not self.has_ood:
            (probabilities,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch})
            return np.asarray(probabilities)
        probabilities, scores = session.run([OUTPUT_NAME, OOD_NAME], {INPUT_NAME: batch})
        return np.asarray(probabilities), np.asarray(scores, dtype=np.float64)

    def predict_with_heatmaps(
        self, batch: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """float32 [N, C, H, W] -> (probabilities [N, L], heatmaps [N, L, h, w][, ood_score [N]]);
        only if `has_heatmaps`."""
        if not self.has_heatmaps:
            raise ModelLoadError(f"model {self.record.name} has no {HEATMAP_NAME!r} output")
        names = [OUTPUT_NAME, HEATMAP_NAME] + [OOD_NAME] * self.has_ood
        probabilities, heatmaps, *scores = self.session.run(names, {INPUT_NAME: batch})
        maps = np.asarray(heatmaps, dtype=np.float32)
        if scores:
            return np.asarray(probabilities), maps, np.asarray(scores[0], dtype=np.float64)
        return np.asarray(probabilities), maps

    def warm_up(self) -> None:
        """One inference on a zero image, so the first request does not pay for lazy initialisation."""
        answer = self.predict(np.zeros((1, *self.input_shape), dtype=np.float32))
        probabilities, scores = answer if isinstance(answer, tuple) else (answer, None)
        if scores is not None and scores.shape != (1,):
            raise ModelLoadError(f"warm-up {OOD_NAME!r} has shape {list(scores.shape)}, expected [1]")
        if probabilities.shape != (1, self.record.num_outputs):
            raise ModelLoadError(
                f"warm-up output has shape {list(probabilities.shape)}, "
                f"expected [1, {self.record.num_outputs}] for labels {list(self.record.labels)}"
            )


def load_model(
    path: Path, *, provider: str = "auto", intra_op_threads: int = 0, expected_variant: str | None = None
) -> LoadedModel:
    """Open `path`, read its record from the ONNX metadata and check the I/O contract against it.

    `intra_op_threads` 0 on the CPU chooses by measurement: one thread when a batch-1 inference on one
    thread is under `SINGLE_THREAD_LIMIT_MS`, else one per usable core. `expected_variant` (fp32/fp16/int8,
    from the file name in a model directory) must equal the record's.
    """
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist; set SERVE_MODEL_PATH to an exported .onnx file")
    chosen = choose_provider(provider, ort.get_available_providers())
    auto = intra_op_threads == 0 and chosen == CPU
    threads = 1 if auto else intra_op_threads
    session = _open_session(path, chosen, threads)
    if session.get_providers()[0] != chosen:
        # onnxruntime-gpu installed but no usable GPU: onnxruntime fell back to the CPU on its own.
        if provider != "auto":
            raise ModelLoadError(f"onnxruntime could not start {chosen}; the session uses {session.get_providers()}")
        logger.warning("onnxruntime could not start %s; serving on %s", chosen, session.get_providers()[0])
        chosen = session.get_providers()[0]
    try:
        record = ModelRecord.from_json(session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY))
    except RecordError as exc:
        raise RecordError(f"{path}: {exc} (metadata key {ONNX_METADATA_KEY!r})") from None
    if expected_variant is not None and record.variant != expected_variant:
        raise ModelLoadError(
            f"{path} is named as the {expected_variant} variant ({VARIANT_FILES[expected_variant]}) "
            f"but its record says variant {record.variant!r}"
        )
    has_heatmaps = _check_contract(session, record)
    has_ood = _check_ood(session, record)
    cores = usable_cores()
    shared_session = None
    if auto and cores > 1:
        single_ms = _batch1_ms(session, record)
        if single_ms >= SINGLE_THREAD_LIMIT_MS:
            threads = cores
            shared_session = session
            session = _open_session(path, chosen, threads)
        logger.info(
            "onnxruntime intra-op threads: %d (batch-1 inference on one thread: %.1f ms; limit %.0f ms)",
            threads, single_ms, SINGLE_THREAD_LIMIT_MS,
        )  # fmt: skip
    return LoadedModel(
        session=session,
        record=record,
        provider=chosen,
        has_heatmaps=has_heatmaps,
        has_ood=has_ood,
        intra_op_threads=threads,
        shared_session=shared_session,
    )


def _open_session(path: Path, provider: str, intra_op_threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
        # Spinning kept on: measured on 2 cores (convnext_tiny-224, 1024² PNG), turning it off cost 7 ms of
        # inference per image at c=1 and 7% img/s at c=8, more than the decode threads gained.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    # CPU stays listed behind CUDA for the few operators CUDA lacks; load_model still refuses a
    # session where CUDA silently failed to initialise.
    providers = [CUDA, CPU] if provider == CUDA else [CPU]
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def _batch1_ms(session: ort.InferenceSession, record: ModelRecord) -> float:
    """Median milliseconds of a batch-1 inference (after one untimed run)."""
    pre = record.preprocessing
    batch = np.zeros((1, pre.channels, pre.height, pre.width), dtype=np.float32)
    session.run([OUTPUT_NAME], {INPUT_NAME: batch})
    timings = []
    for _ in range(TIMED_RUNS):
        started = time.perf_counter()
        session.run([OUTPUT_NAME], {INPUT_NAME: batch})
        timings.append((time.perf_counter() - started) * 1e3)
    return float(np.median(timings))


def _check_contract(session: ort.InferenceSession, record: ModelRecord) -> bool:
    """Input "input" [N, C, H, W] with a dynamic N, output "probabilities" [N, L], as export promises.

    Returns whether the optional "heatmaps" output [N, L, h, w] is there (checked when it is)."""
    inputs = {node.name: node for node in session.get_inputs()}
    outputs = {node.name: node for node in session.get_outputs()}
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise ModelLoadError(
            f"model must have input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
            f"has inputs {sorted(inputs)} and outputs {sorted(outputs)}"
        )
    pre = record.preprocessing
    _check_shape("input", inputs[INPUT_NAME].shape, [pre.channels, pre.height, pre.width])
    _check_shape("output", outputs[OUTPUT_NAME].shape, [record.num_outputs])
    if inputs[INPUT_NAME].type != "tensor(float)":
        raise ModelLoadError(f"input {INPUT_NAME!r} must be float32, is {inputs[INPUT_NAME].type}")
    if HEATMAP_NAME not in outputs:
        return False
    heatmaps = outputs[HEATMAP_NAME].shape
    if len(heatmaps) != 4 or (isinstance(heatmaps[1], int) and heatmaps[1] != record.num_outputs):
        expected = f"[N, {record.num_outputs}, h, w]"
        raise ModelLoadError(f"output {HEATMAP_NAME!r} has shape {list(heatmaps)}, expected {expected}")
    return True


def _check_ood(session: ort.InferenceSession, record: ModelRecord) -> bool:
    """Whether the graph has the "ood_score" output [N]; it must come with the record's `ood` spec, and back."""
    outputs = {node.name: node for node in session.get_outputs()}
    if (OOD_NAME in outputs) != (record.ood is not None):
        has = "has" if OOD_NAME in outputs else "lacks"
        raise ModelLoadError(
            f"the model {has} an {OOD_NAME!r} output but its record {'lacks' if record.ood is None else 'has'} "
            "the 'ood' spec that says how to read it; re-export it"
        )
    if record.ood is None:
        return False
    if len(outputs[OOD_NAME].shape) != 1 or outputs[OOD_NAME].type != "tensor(float)":
        raise ModelLoadError(
            f"output {OOD_NAME!r} must be float32 [N], is {outputs[OOD_NAME].type} {outputs[OOD_NAME].shape}"
        )
    return True


def _check_shape(what: str, shape: Sequence[int | str | None], expected_tail: list[int]) -> None:
    if len(shape) != len(expected_tail) + 1:
        raise ModelLoadError(f"{what} has shape {list(shape)}, expected [N, {', '.join(map(str, expected_tail))}]")
    if isinstance(shape[0], int):
        raise ModelLoadError(f"{what} batch axis is fixed at {shape[0]}; export it with a dynamic batch axis")
    for axis, (actual, expected) in enumerate(zip(shape[1:], expected_tail, strict=True), start=1):
        if isinstance(actual, int) and actual != expected:
            raise ModelLoadError(f"{what} axis {axis} is {actual}, the model record says {expected}")
