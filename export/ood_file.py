"""Give an already exported fp32 file the out-of-distribution output, by appending nodes to its graph.

`python -m export ood MODEL.onnx` does this for a model exported without `--ood` (such as the bundled
1.0.0): the same fit and nodes as `export --ood` (`export.ood`), the same checks as any export (full
checker, contract, embedded record), and parity with the original file: probabilities and heatmaps
unchanged, `ood_score` equal to the NumPy computation on the original graph's own features.
Variants are then remade from the new file (`python -m export fp16|int8`), so they carry it too.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from export.atomic import write_checked
from export.errors import ExportError
from export.inputs import parity_inputs
from export.metadata import EXPORT_METADATA_KEY, embed_metadata, read_metadata, read_record
from export.ood import (
    DEFAULT_FIT_SAMPLES,
    DEFAULT_KEPT_FRACTION,
    add_ood_score,
    feature_tensor,
    features_model,
    run_features,
)
from export.parity import ParityReport, onnx_reference, open_session
from export.verify import check_destination, verify_file
from medcore.record import ModelRecord


@dataclass(frozen=True)
class OodFileReport:
    output: Path
    record: ModelRecord
    parity: ParityReport

    def summary(self) -> str:
        spec = self.record.ood
        assert spec is not None
        return "\n".join(
            [
                f"added ood_score to {self.record.name} {self.record.version} -> {self.output}",
                f"  Mahalanobis distance fitted on {spec.fit.get('of', spec.fitted_on)} ({spec.fit.get('features')} "
                f"features, {spec.fit.get('covariance')})",
                f"  threshold {spec.threshold:.4g} keeps {spec.kept_fraction:.0%} of {spec.threshold_split} "
                f"({spec.fit.get('threshold_images')} images)",
                f"  parity vs the original file: {self.parity.line()}: passed",
            ]
        )


def add_ood_to_file(
    path: str | Path,
    out_path: str | Path | None = None,
    *,
    kept_fraction: float = DEFAULT_KEPT_FRACTION,
    fit_samples: int = DEFAULT_FIT_SAMPLES,
    tolerance: float = 1e-5,
    force: bool = False,
) -> OodFileReport:
    """Write `path` with an `ood_score` output to `out_path` (default: `path` itself, which needs `force`)."""
    path = Path(path)
    out = Path(out_path) if out_path is not None else path
    check_destination(out, force=force)
    record = read_record(path)
    if record.variant != "fp32":
        raise ExportError(f"{path} is the {record.variant} variant; add the score to the fp32 file, then remake it")
    if record.ood is not None:
        raise ExportError(f"{path} already has an out-of-distribution output")
    model = onnx.load(str(path))
    original = model.SerializeToString()
    probe = features_model(model, feature_tensor(model))
    new_record, fit = add_ood_score(model, record, kept_fraction=kept_fraction, fit_samples=fit_samples)
    info = json.loads(read_metadata(path).get(EXPORT_METADATA_KEY, "{}"))
    embed_metadata(model, new_record, {**info, "ood": "appended to the exported graph (python -m export ood)"})
    base, features = onnx_reference(original), open_session(probe)

    def reference(batch: np.ndarray) -> list[np.ndarray]:
        return [*base(batch), fit.score(run_features(features, batch))]

    inputs = parity_inputs(new_record)

    def verify(written: Path) -> ParityReport:
        return verify_file(written, new_record, reference, inputs, tolerance=tolerance, against="the original file")

    parity = write_checked(out, model.SerializeToString(), verify)
    return OodFileReport(out, new_record, parity)


def add_export_options(parser: argparse.ArgumentParser) -> None:
    """`python -m export onnx` options that add the score while exporting."""
    parser.add_argument(
        "--ood",
        action="store_true",
        help="add the 'ood_score' output: fitted on the training split, thresholded on validation (needs the data)",
    )
    _fit_options(parser, prefix="--ood-")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`python -m export ood MODEL.onnx`: add the score to an exported fp32 file."""
    parser.description = (
        "Add the out-of-distribution output 'ood_score' to an exported fp32 ONNX file: a Mahalanobis distance of "
        "its pooled features, fitted on the training split its record names, with the threshold set on validation. "
        "Remake its fp16/int8 variants afterwards."
    )
    parser.add_argument("model", type=Path, help="the fp32 ONNX file")
    parser.add_argument("--output", type=Path, help="file to write (default: replace MODEL, with --force)")
    _fit_options(parser, prefix="--")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    return parser


def _fit_options(parser: argparse.ArgumentParser, *, prefix: str) -> None:
    parser.add_argument(
        f"{prefix}kept-fraction",
        type=float,
        default=DEFAULT_KEPT_FRACTION,
        help=f"share of validation images the threshold keeps (default {DEFAULT_KEPT_FRACTION:g})",
    )
    parser.add_argument(
        f"{prefix}fit-samples",
        type=int,
        default=DEFAULT_FIT_SAMPLES,
        help=f"training images the statistics are fitted on (default {DEFAULT_FIT_SAMPLES}; a seeded subset)",
    )


def run_ood(args: argparse.Namespace) -> int:
    report = add_ood_to_file(
        args.model, args.output, kept_fraction=args.kept_fraction, fit_samples=args.fit_samples, force=args.force
    )
    print(report.summary())
    return 0
