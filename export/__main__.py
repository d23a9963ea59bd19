"""python -m export CHECKPOINT OUT.onnx: parse the flags, call `export_onnx`, print its report."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from export.convert import DEFAULT_OPSET, EXPORTERS
from export.errors import ExportError
from export.onnx_export import export_onnx
from export.parity import DEFAULT_TOLERANCE
from export.quantize import DEFAULT_INT8_TOLERANCE, quantize_int8


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a training checkpoint to ONNX (input 'input' NCHW float32, output 'probabilities'), "
        "checked with onnx.checker and a PyTorch-vs-onnxruntime parity run on real images.",
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint written by the trainer")
    parser.add_argument(
        "output", type=Path, help="ONNX file to write (replaced atomically, only if every check passes)"
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument(
        "--exporter", choices=EXPORTERS, default="dynamo",
        help="torch.onnx exporter: dynamo (torch.export, opset >= 18) or legacy (TorchScript, opset >= 17)",
    )
    parser.add_argument(
        "--tolerance", type=float, default=DEFAULT_TOLERANCE,
        help=f"largest allowed absolute difference of the probabilities (default {DEFAULT_TOLERANCE:g})",
    )
    parser.add_argument(
        "--parity-images", nargs="+", metavar="PATH",
        help="image files, directories or glob patterns for the parity run "
        "(default: 6 fixed radiographs from ../shared/data)",
    )
    parser.add_argument("--name", help="model name to write instead of the checkpoint record's")
    parser.add_argument("--version", help="model version to write instead of the checkpoint record's")
    parser.add_argument("--report", type=Path, metavar="JSON", help="also write the export report as JSON")
    parser.add_argument(
        "--quantize", action="store_true",
        help="also write OUT.int8.onnx (onnxruntime dynamic int8), checked against the fp32 file",
    )
    parser.add_argument(
        "--int8-tolerance", type=float, default=DEFAULT_INT8_TOLERANCE,
        help=f"largest allowed |p_int8 - p_fp32| (default {DEFAULT_INT8_TOLERANCE:g})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        report = export_onnx(
            args.checkpoint,
            args.output,
            opset=args.opset,
            parity_images=args.parity_images,
            tolerance=args.tolerance,
            name=args.name,
            version=args.version,
            exporter=args.exporter,
        )
    except (ExportError, OSError, ValueError) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    print(report.summary())
    summary = report.to_dict()
    status = 0
    if args.quantize:
        try:
            int8 = quantize_int8(args.output, parity_images=args.parity_images, tolerance=args.int8_tolerance)
        except (ExportError, OSError, ValueError) as exc:
            print(f"int8 quantization failed (the fp32 file {args.output} is valid): {exc}", file=sys.stderr)
            status = 1
        else:
            print(int8.summary())
            summary["int8"] = int8.to_dict()
    if args.report:
        args.report.write_text(json.dumps(summary, indent=2) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
