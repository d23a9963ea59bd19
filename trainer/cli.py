"""Command line: `python -m trainer train --config configs/X.yaml [flags]`, `python -m trainer describe [flags]`,
`python -m trainer slurm [train flags] --nodes N --gpus-per-node G ...` (an sbatch script).

Parse, build the config (defaults < file < flags), call the library. Nothing else lives here.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from trainer.config import ARCHITECTURES, DATA_KINDS, DataConfig, load_config
from trainer.stopped import Stopped

# flag destination -> dotted config key
_FLAG_KEYS = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "arch": "model.arch",
    "stem_stride": "model.stem_stride",
    "output_dir": "output_dir",
    "device": "device",
    "seed": "seed",
    "resume": "resume",
    "threshold_policy": "threshold.policy",
}
# Data flags, shared by `train` and `describe`: flag destination -> data.<key>.
_DATA_KEYS = (
    "kind", "path", "labels", "limit", "labels_file", "labeler", "uncertainty", "blank", "views", "subtypes", "task",
    "path_column", "label_column", "label_columns", "separator", "channels", "val_fraction", "test_fraction",
    "split_seed", "skip_bad", "cache", "cache_dir", "patient_column", "allow_leakage",
)  # fmt: skip
_LISTS = ("labels", "views", "label_columns", "channels")


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data (see trainer/config.py DataConfig)")
    data.add_argument("--data-kind", dest="kind", help=f"one of {', '.join(DATA_KINDS)}")
    data.add_argument("--data-path", dest="path", help="the dataset folder, or its .npz / .csv file")
    data.add_argument("--labels", help="comma-separated label names / classes, in order")
    data.add_argument("--limit", type=int, help="use at most this many samples per split (quick runs)")
    data.add_argument("--labels-file", help="nih: the label CSV, if not Data_Entry_2017(_v2020).csv")
    data.add_argument("--labeler", help="mimic: chexpert or negbio")
    data.add_argument("--uncertainty", help='-1 labels: ignore, zeros or ones; per label e.g. "ignore,Edema=ones"')
    data.add_argument("--blank", help="mimic, chexpert: blank cells are unknown or zeros")
    data.add_argument("--views", help="nih, mimic, chexpert: comma-separated views to keep, e.g. PA,AP")
    data.add_argument("--subtypes", action="store_true", default=None, help="kermany: normal/bacteria/virus")
    data.add_argument("--task", help="csv: auto, binary, multiclass or multilabel")
    data.add_argument("--path-column", help="csv: the image path column (default path)")
    data.add_argument("--label-column", help="csv, microscopy: the class name column (default label)")
    data.add_argument("--label-columns", help="csv: comma-separated multi-hot label columns")
    data.add_argument("--separator", help="csv: between several names in one cell (default |)")
    data.add_argument("--patient-column", help="csv: the patient id column (default: patient_id, patientid, ...)")
    data.add_argument("--allow-leakage", action="store_true", default=None,
                      help="train even when the leakage check finds a patient in two splits")  # fmt: skip
    data.add_argument("--channels", help="microscopy: comma-separated channel names, e.g. nucleus,microtubules,er")
    data.add_argument("--val-fraction", type=float, help="share for val where there is no official split")
    data.add_argument("--test-fraction", type=float, help="share for test where there is no official split")
    data.add_argument("--split-seed", type=int, help="seed of the patient-level split (default 0)")
    data.add_argument("--skip-bad", action="store_true", default=None, help="skip bad samples with a report")
    data.add_argument("--cache", action="store_true", default=None, help="decode once into a uint8 memmap cache")
    data.add_argument("--cache-dir", help="where the cache lives (default ~/.cache/medimaging)")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train and evaluate medical-image classifiers from the layouts datasets ship in. "
        "Each command has its own help: python -m trainer train --help.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a classifier and evaluate it on the test split")
    train.add_argument("--config", help="YAML or JSON file with the run's settings")
    train.add_argument("--epochs", type=int)
    train.add_argument("--batch-size", type=int, help="images per step per process (under torchrun: per GPU)")
    train.add_argument("--lr", type=float, help="peak learning rate")
    train.add_argument("--weight-decay", type=float)
    train.add_argument("--arch", help=f"one of {', '.join(ARCHITECTURES)}")
    train.add_argument("--stem-stride", type=int, help="1, 2 or 4")
    train.add_argument("--output-dir")
    train.add_argument("--workers", type=int, help="DataLoader worker processes")
    train.add_argument("--device", help="auto, cpu, cuda or cuda:<index>")
    train.add_argument("--seed", type=int)
    train.add_argument("--threshold-policy", help="youden, balanced, fbeta, f1, sensitivity or fixed")
    train.add_argument(
        "--resume", nargs="?", const="last", metavar="CHECKPOINT", help="continue a run (default: OUTPUT_DIR/last.pt)"
    )
    _add_set_flag(train)
    train.add_argument("--no-progress", action="store_true", help="no progress bars (summary lines only)")
    _add_data_flags(train)
    _add_compare_parser(commands)
    commands.add_parser("slurm", add_help=False, help="write an sbatch script for a DDP run (see slurm --help)")
    describe = commands.add_parser(
        "describe", help="print per-split samples, patients and label counts as JSON; check that files exist"
    )
    describe.add_argument("--config", help="YAML or JSON file with the run's settings (its data section is used)")
    _add_set_flag(describe)
    _add_data_flags(describe)
    return parser


def _add_compare_parser(commands: Any) -> None:
    compare = commands.add_parser("compare", help="train several architectures with one recipe, compare on test")
    compare.add_argument("--config", help="YAML or JSON file with the shared recipe")
    compare.add_argument("--archs", default="convnext_tiny,resnet50", help="comma-separated architectures")
    for flag, kind in (("--epochs", int), ("--batch-size", int), ("--lr", float), ("--weight-decay", float),
                       ("--stem-stride", int), ("--workers", int), ("--seed", int)):  # fmt: skip
        compare.add_argument(flag, type=kind)
    compare.add_argument("--output-dir", help="each model trains into OUTPUT_DIR/<arch>; the table goes here")
    compare.add_argument("--device", help="auto, cpu, cuda or cuda:<index>")
    compare.add_argument("--threshold-policy", help="youden, balanced, fbeta, f1, sensitivity or fixed")
    compare.add_argument("--no-progress", action="store_true", help="no progress bars (summary lines only)")
    _add_set_flag(compare)
    _add_data_flags(compare)


def _add_set_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config key, e.g. --set optim.ema_decay=0.999 (value parsed as YAML)",
    )


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Flags given on the command line, as dotted config keys."""
    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    for dest, key in _FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides[key] = value
    if getattr(args, "workers", None) is not None:
        overrides["data.num_workers"] = args.workers
    for key in _DATA_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            overrides[f"data.{key}"] = [v.strip() for v in value.split(",") if v.strip()] if key in _LISTS else value
    if getattr(args, "no_progress", False):
        overrides["progress"] = False
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["slurm"]:  # its own parser: the flags it does not know are train flags
        from trainer.slurm import main as slurm

        return slurm(argv[1:])
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        config = load_config(args.config, overrides_from_args(args))
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "describe":
        return _describe(config.data)
    try:
        if args.command == "compare":
            from trainer.compare import compare

            compare(config, [a.strip() for a in args.archs.split(",") if a.strip()])
            return 0
        from trainer.train import train  # after parsing, so --help and config errors stay fast

        train(config)
    except Stopped as stopped:  # SIGTERM / SIGUSR1: last.pt written
        print(f"stopped: {stopped}", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); resume with --resume where last.pt was written", file=sys.stderr)
        return 130
    except (ValueError, OSError) as exc:  # DataError, a taken output dir, a missing CUDA device, unreadable files
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _describe(data_config: DataConfig) -> int:
    """Print the description as JSON; exit 1 when training would stop on bad data, 2 when the data cannot be read."""
    from trainer.data import load_data
    from trainer.data.describe import describe_data

    try:
        data = load_data(data_config, describe=True)
    except ValueError as exc:  # DataError included
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = describe_data(data, skip_bad=data_config.skip_bad)
    print(json.dumps(report, indent=2))
    return 1 if report["training_would_stop"] else 0
