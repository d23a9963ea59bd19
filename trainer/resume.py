"""What makes resume exact: a sampler and augmentation seeds that depend only on (seed, epoch, position),
stop signals that end a run at a batch boundary, and the refusal to resume with other data or schedule.

With DataLoader workers, each worker's RNG depends on when and where it was started; so the training
augmentation is seeded per sample from (seed, epoch, index) instead, and the order from (seed, epoch).
A run stopped after k optimiser steps of an epoch resumes by skipping the first k batches of that
very order: the weights then equal those of an uninterrupted run bit for bit (on the CPU).
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger("trainer")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # SLURM sends SIGUSR1 (--signal) before the time limit, then SIGTERM
# Config keys a resumed run may change: where it runs and how it reports, not what it computes.
RESUMABLE_CHANGES = ("resume", "progress", "device", "data.num_workers", "data.pin_memory", "data.cache",
                     "data.cache_dir", "output_dir", "report.tensorboard", "epochs")  # fmt: skip


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (splitmix-style), the same on every platform."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        state ^= state >> 31
    return state & 0x7FFFFFFFFFFFFFFF


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, optionally one rank's share of it (DDP), starting at `start` samples in.

    The order depends on (seed, epoch) only. With `num_replicas` > 1 the permutation is padded by
    repetition to a multiple of the replicas and rank r takes every r-th index, like DistributedSampler.
    """

    def __init__(self, size: int, seed: int, *, num_replicas: int = 1, rank: int = 0) -> None:
        self.size, self.seed, self.num_replicas, self.rank = size, seed, num_replicas, rank
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use epoch `epoch`'s order, skipping this rank's first `start` samples (a resumed epoch)."""
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        order = torch.randperm(self.size, generator=generator).tolist()
        total = -(-self.size // self.num_replicas) * self.num_replicas
        order += order[: total - len(order)]
        return order[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start :])

    def __len__(self) -> int:
        return -(-self.size // self.num_replicas) - self.start


class SeededSamples(Dataset[Any]):
    """`dataset[index]` with torch's RNG (which the augmentation draws from) seeded from (seed, epoch, index).

    The epoch is read in the worker, so the train loader must not keep workers across epochs.
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        # The CPU generator alone (the augmentation's): torch.manual_seed also seeds every accelerator backend,
        # ~90 us a sample, a tenth of a small image's whole load-and-augment time.
        generator = torch.default_generator
        state = generator.get_state()
        generator.manual_seed(_mix(self.seed, self.epoch, index))
        try:
            return self.dataset[index]
        finally:
            generator.set_state(state)


class StopSignals:
    """While active, SIGTERM and SIGUSR1 only set a flag: the loop saves a checkpoint at the next batch boundary."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread: signals stay as they are
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name
        logger.warning("%s received: saving a checkpoint at the next batch boundary, then stopping", self.received)

    def __call__(self) -> bool:
        return self.received is not None


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """`key: saved -> current` for every setting that differs and that a resumed run must not change."""
    old, new = _flatten(saved), _flatten(current)
    changed = []
    for key in sorted(set(old) | set(new)):
        # What the model is for changes no weight: a resumed run may state it (runs made before the section too).
        if key in RESUMABLE_CHANGES or key.startswith("intended_use.") or old.get(key) == new.get(key):
            continue
        changed.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return changed


def data_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Per split, the sample counts that differ between the checkpoint's data and the data read now."""
    changed = []
    for name in sorted(set(saved) | set(current)):
        old, new = saved.get(name, {}), current.get(name, {})
        if old.get("n") != new.get("n") or old.get("positives") != new.get("positives"):
            changed.append(f"{name} split: {old.get('n')} samples -> {new.get('n')}")
    return changed
