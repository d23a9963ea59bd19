"""Command line: `python -m trainer train --config configs/X.yaml [flags]`.

Parse, build the config (defaults < file < flags), call the library. Nothing else lives here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from trainer.config import ARCHITECTURES, DATA_KINDS, load_config

# flag destination -> dotted config key
_FLAG_KEYS = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "arch": "model.arch",
    "stem_stride": "model.stem_stride",
    "output_dir": "output_dir",
    "data_kind": "data.kind",
    "data_path": "data.path",
    "limit": "data.limit",
    "workers": "data.num_workers",
    "device": "device",
    "seed": "seed",
    "resume": "resume",
    "threshold_policy": "threshold.policy",
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a classifier and evaluate it on the test split")
    train.add_argument("--config", help="YAML or JSON file with the run's settings")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--lr", type=float, help="peak learning rate")
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--arch", help=f"one of {', '.join(ARCHITECTURES)}")
    train.add_argument("--stem-stride", type=int, help="1, 2 or 4")
    train.add_argument("--output-dir")
    train.add_argument("--data-kind", help=f"one of {', '.join(DATA_KINDS)}")
    train.add_argument("--data-path")
    train.add_argument("--limit", type=int, help="use at most this many samples per split (quick runs)")
    train.add_argument("--workers", type=int, help="DataLoader worker processes")
    train.add_argument("--device", help="auto, cpu, cuda or cuda:<index>")
    train.add_argument("--seed", type=int)
    train.add_argument("--threshold-policy", help="youden, balanced, f1 or fixed")
    train.add_argument(
        "--resume", nargs="?", const="last", metavar="CHECKPOINT", help="continue a run (default: OUTPUT_DIR/last.pt)"
    )
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config key, e.g. --set optim.ema_decay=0.999 (value parsed as YAML)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bars (summary lines only)")
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Flags given on the command line, as dotted config keys."""
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    for dest, key in _FLAG_KEYS.items():
        value = getattr(args, dest)
        if value is not None:
            overrides[key] = value
    if args.no_progress:
        overrides["progress"] = False
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        config = load_config(args.config, overrides_from_args(args))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from trainer.train import train  # after parsing, so --help and config errors stay fast

    train(config)
    return 0
