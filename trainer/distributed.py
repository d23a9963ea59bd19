"""The process group of a `torchrun` launch: joining it, wrapping the model, agreeing on a stop, and
evaluating each split once across the ranks.

Without torchrun (no process group), a run is rank 0 of a world of 1 and every function is a no-op.
Under torchrun every rank trains on its share of each epoch (`EpochSampler`), evaluates a contiguous
shard of each split (`ShardSampler`), and the shards are gathered in rank order: every sample exactly
once, in the split's own order. Rank 0 alone writes files and logs at INFO.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Sampler


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0 writes checkpoints, reports and logs."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, `cuda` means this process's GPU: cuda:LOCAL_RANK."""
    if launched() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Under torchrun, join the group (nccl on CUDA, gloo on the CPU) for the block, and leave it after;
    ranks other than 0 log warnings only. Without torchrun, nothing happens."""
    if not launched() or active():
        yield
        return
    device = local_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if not is_main():
        logging.getLogger("trainer").setLevel(logging.WARNING)
    try:
        yield
    finally:
        dist.destroy_process_group()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` in DistributedDataParallel under torchrun (gradients averaged over the ranks), else itself."""
    if not active():
        return model
    # ConvNeXt's depthwise kernels ([C, 1, k, k]) get gradients whose size-1 dimension has another stride than
    # DDP's bucket view: the same memory layout, a spurious warning on every run (pytorch/pytorch#47163).
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def barrier() -> None:
    if active():
        dist.barrier()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_rank(flag: bool) -> bool:
    """True on every rank when it is true on one (a stop signal seen by one rank stops all at the same batch)."""
    if not active():
        return flag
    tensor = torch.tensor([int(flag)], device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def all_reduce_sum(value: float) -> float:
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return float(tensor.item())


def gather_rows(array: np.ndarray) -> np.ndarray:
    """Every rank's rows, concatenated in rank order (on rank 0 and the others alike)."""
    if not active():
        return array
    parts: list[np.ndarray | None] = [None] * world_size()
    dist.all_gather_object(parts, array)
    return np.concatenate([p for p in parts if p is not None])


class ShardSampler(Sampler[int]):
    """Rank r's contiguous block of `range(size)`, no padding: the blocks in rank order are the split once."""

    def __init__(self, size: int, num_replicas: int, rank: int) -> None:
        per_rank = -(-size // num_replicas)
        self.start, self.stop = min(size, rank * per_rank), min(size, (rank + 1) * per_rank)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start


def eval_shard(size: int) -> ShardSampler | None:
    """This rank's shard of an evaluation split of `size` samples; None (the whole split) without torchrun."""
    return ShardSampler(size, world_size(), rank()) if active() else None
