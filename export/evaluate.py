"""python -m export evaluate MODEL.onnx: score an exported file on dataset splits, write metrics JSON (no torch)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.atomic import write_checked
from export.errors import ExportError
from export.evaluation import DEFAULT_BATCH_SIZE, data_config_from_record, evaluate_onnx, read_record_any
from trainer.config import DATA_KINDS
from trainer.data import SPLITS

DEFAULT_OUT_DIR = Path("runs") / "evaluate"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.description = (
        "Evaluate an exported ONNX model on dataset splits with the trainer's data loading "
        "(medcore preprocessing) and metrics, without torch. The data defaults to the one named in the model's record."
    )
    parser.add_argument("model", type=Path, help="ONNX file written by `python -m export`")
    parser.add_argument("--data-kind", choices=DATA_KINDS, help="dataset layout (default: from the record)")
    parser.add_argument("--data-path", help="dataset file or folder (default: from the record)")
    parser.add_argument("--split", nargs="+", choices=SPLITS, default=["test"], help="splits to score (default test)")
    parser.add_argument("--limit", type=int, help="at most this many samples per split (the trainer's fixed subset)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument(
        "--out",
        type=Path,
        help=f"metrics JSON to write (default: {DEFAULT_OUT_DIR}/<name>/<version>/<file>.metrics.json, never beside "
        "the model: pass --out MODEL_DIR/metrics.json to publish the figures with it, for `export card`)",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing metrics file")
    return parser


def get_args_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog="python -m export evaluate"))


def run_evaluate(args: argparse.Namespace) -> int:
    record = read_record_any(args.model)
    out = args.out or default_out(args.model, record.name, record.version)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} already exists; pass --force to replace it")
    data = data_config_from_record(record, kind=args.data_kind, path=args.data_path, limit=args.limit)
    metrics = evaluate_onnx(args.model, data=data, splits=args.split, batch_size=args.batch_size)
    text = json.dumps(metrics, indent=2) + "\n"
    write_checked(out, text.encode(), lambda path: None)
    print(summary(metrics))
    print(f"metrics written to {out}")
    return 0


def default_out(model: Path, name: str, version: str) -> Path:
    """Where metrics go without --out: under runs/ (git-ignored), so a model directory changes only when asked."""
    return DEFAULT_OUT_DIR / name / version / f"{model.name.removesuffix('.onnx')}.metrics.json"


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        return run_evaluate(args)
    except (ExportError, OSError, ValueError) as exc:
        print(f"evaluation failed: {exc}", file=sys.stderr)
        return 1


def summary(metrics: dict[str, Any]) -> str:
    """A fixed-width table: one row per split and label."""
    model = metrics["model"]
    lines = [
        f"{model['name']} {model['version']} ({model['file']}) on {metrics['data']['kind']} {metrics['data']['path']}",
        f"{'split':<6} {'label':<16} {'n':>6} {'auroc':>7} {'acc':>7} {'sens':>7} {'spec':>7} {'f1':>7} {'thr':>6}",
    ]
    for split, result in metrics["splits"].items():
        for label, m in result["labels"].items():
            cells = " ".join(_cell(m[key]) for key in ("auroc", "accuracy", "sensitivity", "specificity", "f1"))
            lines.append(f"{split:<6} {label:<16} {m['n']:>6} {cells} {m['threshold']:>6.3f}")
        if "top1_accuracy" in result:
            lines.append(f"{split:<6} top-1 accuracy {_cell(result['top1_accuracy'])}")
        if "ood" in result:
            ood = result["ood"]
            lines.append(
                f"{split:<6} out-of-distribution: {ood['flagged']} of {result['n']} flagged "
                f"({ood['flagged_fraction']:.1%}; ood_score > {ood['threshold']:.4g})"
            )
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return f"{value:>7.4f}" if value is not None else f"{'-':>7}"


if __name__ == "__main__":
    sys.exit(main())
