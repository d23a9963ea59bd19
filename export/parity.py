"""Parity check: the same real images, preprocessed once, through PyTorch and onnxruntime.

Images go through `medcore.imaging.load_model_input`, the preprocessing the service runs,
so the check covers the pixels a deployed model will actually see.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from export.contract import INPUT_NAME
from export.errors import ExportError, ParityError
from medcore.imaging import ImageError, load_model_input, stack_batch
from medcore.record import Preprocessing

# Default tolerance on probabilities (absolute); fp32 CPU runs of the same graph agree to ~1e-6.
DEFAULT_TOLERANCE = 1e-4
# Images per forward pass: bounds memory for large inputs and many files.
CHUNK = 16
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# Probabilities [N, L] of a float32 NCHW batch: the side the ONNX file is compared with.
Reference = Callable[[np.ndarray], np.ndarray]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
# A fixed handful of real radiographs that exercise the decoder: grayscale and RGB JPEGs,
# PNG bytes in a .jpg file (RGBA), and an RGBA PNG.
DEFAULT_IMAGES = (
    "kermany_chest_xray_subset/images/IM-0001-0001.jpeg",
    "kermany_chest_xray_subset/images/NORMAL2-IM-1018-0001.jpeg",
    "kermany_chest_xray_subset/images/person100_virus_184.jpeg",
    "kermany_chest_xray_subset/images/person1008_virus_1691.jpeg",
    "covid_chestxray_ieee8023_subset/images/000001-12.jpg",
    "covid_chestxray_ieee8023_subset/images/16745_3_1.png",
)


@dataclass(frozen=True)
class ParityReport:
    """What was compared and how far apart the two runtimes were."""

    images: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    tolerance: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_parity_images(data_dir: Path = SHARED_DATA) -> list[Path]:
    """The fixed default images, from the shared data folder beside the repository."""
    paths = [data_dir / name for name in DEFAULT_IMAGES]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"default parity images are missing: {missing}; pass parity images explicitly")
    return paths


def resolve_images(specs: Sequence[str | Path] | None) -> list[Path]:
    """Files, directories (their image files) and glob patterns -> image paths, in order, once each."""
    if not specs:
        return default_parity_images()
    found: list[Path] = []
    for spec in specs:
        found.extend(_expand(str(spec)))
    return list(dict.fromkeys(found))


def _expand(spec: str) -> Iterable[Path]:
    path = Path(spec)
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise FileNotFoundError(f"directory {spec} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return images
    if path.is_file():
        return [path]
    if glob.has_magic(spec):
        matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        if not matches:
            raise FileNotFoundError(f"pattern {spec!r} matches no files")
        return matches
    raise FileNotFoundError(f"parity image {spec} does not exist")


def load_inputs(paths: Sequence[Path], recipe: Preprocessing) -> np.ndarray:
    """Decode and preprocess image files exactly as the service does -> float32 NCHW batch."""
    inputs = []
    for path in paths:
        try:
            inputs.append(load_model_input(path.read_bytes(), recipe))
        except ImageError as exc:
            raise ImageError(f"parity image {path}: {exc}") from exc
    return stack_batch(inputs)


def check_parity(
    reference: Reference,
    onnx_path: Path,
    inputs: np.ndarray,
    *,
    tolerance: float,
    names: Sequence[str] = (),
    against: str = "PyTorch",
) -> ParityReport:
    """Compare `reference` probabilities with onnxruntime (CPU) on `inputs`; `ParityError` above `tolerance`.

    onnxruntime runs the inputs in batches of up to CHUNK and the first one alone, so both
    batch 1 and a batch above 1 pass through the dynamic batch axis.
    """
    if len(inputs) == 1:
        inputs = np.concatenate([inputs, inputs])
    session = open_session(onnx_path)
    expected = np.concatenate(
        [reference(inputs[i : i + CHUNK]).astype(np.float64) for i in range(0, len(inputs), CHUNK)]
    )
    runs = [(slice(0, 1), inputs[:1])] + [
        (slice(i, i + CHUNK), inputs[i : i + CHUNK]) for i in range(0, len(inputs), CHUNK)
    ]
    diffs = []
    for rows, batch in runs:
        try:
            got = session.run(None, {INPUT_NAME: batch})[0]
        except Exception as exc:  # as above: onnxruntime's errors share no useful base class
            raise ExportError(f"onnxruntime failed on a batch of {len(batch)}: {exc}") from exc
        if got.shape != expected[rows].shape:
            raise ParityError(
                f"onnxruntime returned shape {got.shape} for a batch of {len(batch)}, "
                f"{against} {expected[rows].shape}"
            )
        diffs.append(np.max(np.abs(got.astype(np.float64) - expected[rows])))
    worst = float(np.max(diffs))  # NaN propagates, and fails the comparison below
    report = ParityReport(
        images=tuple(names),
        batch_sizes=tuple(len(batch) for _, batch in runs),
        max_abs_diff=worst,
        tolerance=tolerance,
    )
    if not worst <= tolerance:
        raise ParityError(
            f"onnxruntime and {against} probabilities differ by up to {worst:.3g} on {len(inputs)} images; "
            f"tolerance is {tolerance:g}"
        )
    return report


def torch_reference(model: nn.Module) -> Reference:
    """PyTorch probabilities (eval mode, fp32, CPU) of a model that already ends in its activation."""
    model = model.eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    return run


def onnx_reference(path: Path) -> Reference:
    """onnxruntime (CPU) probabilities of another ONNX file, e.g. the fp32 original of an int8 file."""
    session = open_session(path)
    return lambda batch: session.run(None, {INPUT_NAME: batch})[0]


def open_session(path: Path) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's pybind errors share no useful base class
        raise ExportError(f"onnxruntime cannot load {path}: {exc}") from exc
