"""The process group of a `torchrun` launch: rank, world size, and gathering per-rank predictions.

Without torchrun (no process group), a run is rank 0 of a world of 1 and every function is a no-op.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0 writes checkpoints, reports and logs."""
    return rank() == 0


def gather_rows(array: np.ndarray) -> np.ndarray:
    """Every rank's rows, concatenated in rank order (on rank 0 and the others alike)."""
    if not active():
        return array
    parts: list[np.ndarray | None] = [None] * world_size()
    dist.all_gather_object(parts, array)
    return np.concatenate([p for p in parts if p is not None])


def all_reduce_sum(value: float) -> float:
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item())
