"""Parity check: the same preprocessed inputs through a reference (PyTorch or the fp32 file) and onnxruntime.

Inputs come from `export.inputs` (the trainer's data layer or medcore's decoder), so the check covers
the pixels a deployed model will actually see. Torch-free: the PyTorch reference lives in `export.head`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from export.contract import HEATMAP_NAME, INPUT_NAME, OOD_NAME
from export.errors import ExportError, ParityError

# Default tolerance on probabilities (absolute); fp32 CPU runs of the same graph agree to ~1e-6.
DEFAULT_TOLERANCE = 1e-4
# Heatmaps against the reference's: max |dh| / max(1, max |h_ref|); fp32 runs agree to ~1e-6.
HEATMAP_TOLERANCE = 1e-3
# The out-of-distribution score against the reference's: max |ds| / max(1, max |s_ref|); fp32 agrees to ~1e-6.
OOD_TOLERANCE = 1e-3
# Images per forward pass: bounds memory for large inputs and many files.
CHUNK = 16
# A float32 NCHW batch -> the graph's outputs in its order: probabilities [N, L], then heatmaps [N, L, h, w]
# and ood_score [N] where the graph has them.
Reference = Callable[[np.ndarray], list[np.ndarray]]


@dataclass(frozen=True)
class ParityReport:
    """What was compared and how far apart the two runtimes were."""

    images: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    tolerance: float
    # Largest relative heatmap difference to the reference, and the largest |activation(mean map) - p|
    # within the checked file itself; None for graphs without heatmaps.
    heatmap_diff: float | None = None
    heatmap_consistency: float | None = None
    # Largest relative difference of the out-of-distribution score; None for graphs without one.
    ood_diff: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        text = (
            f"{len(self.images)} images, onnxruntime batch sizes {sorted(set(self.batch_sizes))}, "
            f"max abs diff {self.max_abs_diff:.2e} on probabilities (tolerance {self.tolerance:g})"
        )
        if self.heatmap_consistency is not None:
            text += f"; heatmaps: mean matches the probabilities to {self.heatmap_consistency:.1e}"
        if self.heatmap_diff is not None:
            text += f", relative diff {self.heatmap_diff:.1e}"
        if self.ood_diff is not None:
            text += f"; ood_score relative diff {self.ood_diff:.1e}"
        return text


def check_parity(
    reference: Reference,
    onnx_path: Path,
    inputs: np.ndarray,
    *,
    tolerance: float,
    names: Sequence[str] = (),
    against: str = "PyTorch",
    softmax: bool = False,
    heatmap_tolerance: float | None = HEATMAP_TOLERANCE,
    ood_tolerance: float | None = OOD_TOLERANCE,
) -> ParityReport:
    """Compare `reference` with onnxruntime (CPU) on `inputs`; `ParityError` above a tolerance.

    onnxruntime runs the inputs in batches of up to CHUNK and the first one alone, so both batch 1
    and a batch above 1 pass through the dynamic batch axis. With heatmaps, the file's maps must
    average to its own probabilities (within `tolerance` after the activation) and, unless
    `heatmap_tolerance` is None, match the reference's maps; likewise the `ood_score` with `ood_tolerance`.
    """
    if len(inputs) == 1:
        inputs = np.concatenate([inputs, inputs])
    session = open_session(onnx_path)
    expected = run_chunked(reference, inputs)
    runs = [(slice(0, 1), inputs[:1])] + [
        (slice(i, i + CHUNK), inputs[i : i + CHUNK]) for i in range(0, len(inputs), CHUNK)
    ]
    outputs = [output.name for output in session.get_outputs()]
    heat = outputs.index(HEATMAP_NAME) if HEATMAP_NAME in outputs else None
    ood = outputs.index(OOD_NAME) if OOD_NAME in outputs else None
    diffs, heat_diffs, consistency, ood_diffs = [], [], [], []
    for rows, batch in runs:
        got = _run(session, batch)
        if len(got) != len(expected) or got[0].shape != expected[0][rows].shape:
            raise ParityError(
                f"onnxruntime returned shapes {[g.shape for g in got]} for a batch of {len(batch)}, "
                f"{against} {[e[rows].shape for e in expected]}"
            )
        diffs.append(np.max(np.abs(got[0].astype(np.float64) - expected[0][rows])))
        if heat is not None:
            heat_diffs.append(_relative_diff(got[heat], expected[heat][rows]))
            consistency.append(heatmap_consistency(got[0], got[heat], softmax=softmax))
        if ood is not None:
            ood_diffs.append(_relative_diff(got[ood], expected[ood][rows]))
    worst = float(np.max(diffs))  # NaN propagates, and fails the comparison below
    report = ParityReport(
        images=tuple(names),
        batch_sizes=tuple(len(batch) for _, batch in runs),
        max_abs_diff=worst,
        tolerance=tolerance,
        heatmap_diff=float(np.max(heat_diffs)) if heat_diffs else None,
        heatmap_consistency=float(np.max(consistency)) if consistency else None,
        ood_diff=float(np.max(ood_diffs)) if ood_diffs else None,
    )
    _gate(report, against, len(inputs), heatmap_tolerance)
    if ood_tolerance is not None and report.ood_diff is not None and not report.ood_diff <= ood_tolerance:
        raise ParityError(
            f"onnxruntime and {against} ood_score differ by up to {report.ood_diff:.3g} (relative); "
            f"tolerance is {ood_tolerance:g}"
        )
    return report


def _relative_diff(got: np.ndarray, reference: np.ndarray) -> float:
    """max |got - reference| / max(1, max |reference|); NaN propagates and fails any tolerance."""
    return float(np.max(np.abs(got - reference)) / max(1.0, float(np.max(np.abs(reference)))))


def _gate(report: ParityReport, against: str, n: int, heatmap_tolerance: float | None) -> None:
    if not report.max_abs_diff <= report.tolerance:
        raise ParityError(
            f"onnxruntime and {against} probabilities differ by up to {report.max_abs_diff:.3g} on {n} images; "
            f"tolerance is {report.tolerance:g}"
        )
    if report.heatmap_consistency is not None and not report.heatmap_consistency <= report.tolerance:
        raise ParityError(
            f"the heatmaps' means give probabilities up to {report.heatmap_consistency:.3g} away from the "
            f"graph's own; tolerance is {report.tolerance:g}"
        )
    if (
        heatmap_tolerance is not None
        and report.heatmap_diff is not None
        and not report.heatmap_diff <= (heatmap_tolerance)
    ):
        raise ParityError(
            f"onnxruntime and {against} heatmaps differ by up to {report.heatmap_diff:.3g} (relative); "
            f"tolerance is {heatmap_tolerance:g}"
        )


def heatmap_consistency(probabilities: np.ndarray, heatmaps: np.ndarray, *, softmax: bool) -> float:
    """max |activation(spatial mean of the maps) - probabilities|: 0 when the maps explain the outputs exactly."""
    logits = heatmaps.astype(np.float64).mean(axis=(2, 3))
    if softmax:
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        implied = shifted / shifted.sum(axis=1, keepdims=True)
    else:
        implied = 1.0 / (1.0 + np.exp(-logits))
    return float(np.max(np.abs(implied - probabilities.astype(np.float64))))


def run_chunked(reference: Reference, inputs: np.ndarray) -> list[np.ndarray]:
    """`reference` over `inputs` in chunks of CHUNK, outputs concatenated, as float64."""
    parts = [reference(inputs[i : i + CHUNK]) for i in range(0, len(inputs), CHUNK)]
    return [np.concatenate([part[k] for part in parts]).astype(np.float64) for k in range(len(parts[0]))]


def onnx_reference(path: Path | bytes) -> Reference:
    """onnxruntime (CPU) outputs of another ONNX file, e.g. the fp32 original of an int8 file."""
    session = open_session(path)
    return lambda batch: _run(session, batch)


def _run(session: ort.InferenceSession, batch: np.ndarray) -> list[np.ndarray]:
    try:
        return list(session.run(None, {INPUT_NAME: batch}))
    except Exception as exc:  # onnxruntime's errors share no useful base class
        raise ExportError(f"onnxruntime failed on a batch of {len(batch)}: {exc}") from exc


def open_session(path: Path | bytes, threads: int | None = None) -> ort.InferenceSession:
    """A CPU session for a file (or serialized model bytes); `threads` caps intra-op threads."""
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        source = path if isinstance(path, bytes) else str(path)
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's pybind errors share no useful base class
        name = "the model bytes" if isinstance(path, bytes) else str(path)
        raise ExportError(f"onnxruntime cannot load {name}: {exc}") from exc
