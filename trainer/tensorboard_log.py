"""Optional TensorBoard scalars per epoch (`report.tensorboard: true`), only when the package is installed.

Without `tensorboard` the run logs one warning and goes on: the per-epoch CSV (history.csv) holds
the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger("trainer")
_warned: set[str] = set()


def log_epoch(output_dir: Path, row: Mapping[str, Any]) -> bool:
    """Write the numeric values of one history row under output_dir/tensorboard; False if TensorBoard is absent."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's wrapper needs the tensorboard package
        if str(output_dir) not in _warned:
            _warned.add(str(output_dir))
            logger.warning("report.tensorboard is set but tensorboard is not installed; history.csv has the curves")
        return False
    step = int(row["epoch"]) + 1
    with SummaryWriter(log_dir=str(output_dir / "tensorboard")) as writer:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                group = "train" if key.startswith("train_") or key in ("lr", "images_per_second", "seconds") else "val"
                writer.add_scalar(f"{group}/{key}", value, step)
    return True
