"""python -m export onnx|inspect|evaluate|quantize|fp16|card|ood: parse the flags, call the library, print its report.

Torch is imported only by `onnx` (checkpoint -> ONNX); the other commands run without it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from export.errors import ExportError
from export.parity import DEFAULT_TOLERANCE

COMMANDS = ("onnx", "inspect", "evaluate", "quantize", "fp16", "card", "intended-use", "ood")
Handler = Callable[[argparse.Namespace], int]


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a checkpoint to a checked ONNX file (probabilities + heatmaps), derive its fp16 and "
        "int8 variants, inspect and evaluate files, and write the model card.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    _onnx_parser(commands.add_parser("onnx", help="checkpoint -> fp32 ONNX (checker, contract, parity)"))
    inspect = commands.add_parser("inspect", help="print the embedded record and the graph's inputs/outputs")
    inspect.add_argument("model", type=Path)
    from export.evaluate import add_arguments

    add_arguments(commands.add_parser("evaluate", help="score an ONNX file on dataset splits (torch-free)"))
    for variant in ("quantize", "fp16"):
        _variant_parser(
            commands.add_parser(
                variant,
                help="static QDQ int8 variant for the CPU" if variant == "quantize" else "fp16 variant for CUDA",
            ),
            variant,
        )
    from export.card import add_arguments as add_card_arguments

    add_card_arguments(commands.add_parser("card", help="write MODEL_CARD.md from the record and metrics"))
    from export.intended_use import add_arguments as add_use_arguments

    add_use_arguments(
        commands.add_parser("intended-use", help="set the intended use in an exported file's record (and variants')")
    )

    from export.ood_file import add_arguments as add_ood_arguments

    add_ood_arguments(commands.add_parser("ood", help="add the out-of-distribution output to an fp32 file"))
    return parser


def _onnx_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="checkpoint written by the trainer")
    parser.add_argument("output", type=Path, nargs="?", help="ONNX file to write (or use --model-dir)")
    parser.add_argument("--model-dir", type=Path, help="write MODEL_DIR/<name>/<version>/model.onnx instead")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18)")
    parser.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"largest allowed |p_onnx - p_torch| (default {DEFAULT_TOLERANCE:g})",
    )
    _parity_images(parser)
    parser.add_argument("--no-heatmaps", action="store_true", help="omit the 'heatmaps' output")
    from export.ood_file import add_export_options

    add_export_options(parser)
    parser.add_argument("--name", help="model name to write instead of the checkpoint record's")
    parser.add_argument("--version", help="model version to write instead of the checkpoint record's")
    parser.add_argument("--report", type=Path, metavar="JSON", help="also write the export report as JSON")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    from export.intended_use import add_intended_use_arguments

    add_intended_use_arguments(parser)


def _variant_parser(parser: argparse.ArgumentParser, variant: str) -> None:
    from export.fp16 import DEFAULT_FP16_AGREEMENT, DEFAULT_FP16_TOLERANCE
    from export.quantize import (
        DEFAULT_CALIBRATION_SAMPLES,
        DEFAULT_INT8_AGREEMENT,
        DEFAULT_INT8_TOLERANCE,
        DEFAULT_MAX_DELTA_AUROC,
    )

    int8 = variant == "quantize"
    parser.add_argument("model", type=Path, help="the fp32 ONNX file")
    parser.add_argument(
        "--output", type=Path, help="file to write (default: model.int8.onnx / model.fp16.onnx beside it)"
    )
    tolerance = DEFAULT_INT8_TOLERANCE if int8 else DEFAULT_FP16_TOLERANCE
    parser.add_argument(
        "--tolerance",
        type=float,
        default=tolerance,
        help=f"largest allowed |p_variant - p_fp32| on the parity inputs (default {tolerance:g})",
    )
    agreement = DEFAULT_INT8_AGREEMENT if int8 else DEFAULT_FP16_AGREEMENT
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=agreement,
        help=f"least share of validation decisions that must agree with fp32 (default {agreement:g})",
    )
    parser.add_argument(
        "--max-delta-auroc",
        type=float,
        default=DEFAULT_MAX_DELTA_AUROC,
        help=f"largest allowed |validation AUROC change| per label (default {DEFAULT_MAX_DELTA_AUROC:g})",
    )
    if int8:
        parser.add_argument(
            "--calibration-samples",
            type=int,
            default=DEFAULT_CALIBRATION_SAMPLES,
            help=f"training images to calibrate on (default {DEFAULT_CALIBRATION_SAMPLES})",
        )
    parser.add_argument("--speed-seconds", type=float, default=4.0, help="time spent measuring img/s (0: skip)")
    _parity_images(parser)
    parser.add_argument("--report", type=Path, metavar="JSON", help="also write the report as JSON")
    parser.add_argument("--force", action="store_true", help="replace an existing file")


def _parity_images(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parity-images",
        nargs="+",
        metavar="PATH",
        help="image files (PNG/JPEG/TIFF/DICOM), folders, globs, or per-channel files joined by '+' "
        "(default: 8 samples of the model's validation split, read through the trainer's data layer)",
    )


def run_onnx(args: argparse.Namespace) -> int:
    from export.intended_use import intended_use_from_args
    from export.onnx_export import export_onnx

    report = export_onnx(
        args.checkpoint,
        args.output,
        model_dir=args.model_dir,
        opset=args.opset,
        parity_images=args.parity_images,
        tolerance=args.tolerance,
        name=args.name,
        version=args.version,
        exporter=args.exporter,
        heatmaps=not args.no_heatmaps,
        ood=args.ood,
        ood_kept_fraction=args.ood_kept_fraction,
        ood_fit_samples=args.ood_fit_samples,
        force=args.force,
        intended_use=lambda current: intended_use_from_args(args, current),
    )
    print(report.summary())
    _write_report(args.report, report.to_dict())
    return 0


def run_variant(args: argparse.Namespace) -> int:
    common: dict[str, Any] = {
        "parity_images": args.parity_images,
        "tolerance": args.tolerance,
        "min_agreement": args.min_agreement,
        "max_delta_auroc": args.max_delta_auroc,
        "speed_seconds": args.speed_seconds,
        "force": args.force,
    }
    if args.command == "quantize":
        from export.quantize import quantize_int8

        report = quantize_int8(
            args.model,
            args.output,
            calibration_samples=args.calibration_samples,
            **common,
        )
    else:
        from export.fp16 import make_fp16

        report = make_fp16(args.model, args.output, **common)
    print(report.summary())
    _write_report(args.report, report.to_dict())
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from export.inspect import describe_file

    print(describe_file(args.model))
    return 0


def _write_report(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        from medcore.atomic import atomic_write

        text = json.dumps(data, indent=2, default=str) + "\n"
        atomic_write(path, lambda handle: handle.write(text.encode()))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv = ["onnx", *argv]  # the pre-subcommand form: python -m export CHECKPOINT OUT.onnx
    args = get_args_parser().parse_args(argv)
    from export.card import run_card
    from export.evaluate import run_evaluate
    from export.intended_use import run_intended_use
    from export.ood_file import run_ood

    handlers: dict[str, Handler] = {
        "onnx": run_onnx,
        "inspect": run_inspect,
        "evaluate": run_evaluate,
        "quantize": run_variant,
        "fp16": run_variant,
        "card": run_card,
        "intended-use": run_intended_use,
        "ood": run_ood,
    }
    try:
        return handlers[args.command](args)
    except (ExportError, OSError, ValueError) as exc:
        print(f"{args.command} failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
