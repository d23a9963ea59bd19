"""One training epoch and one evaluation pass; nothing else."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm import tqdm

from trainer.runtime import Precision

Batches = DataLoader[tuple[torch.Tensor, torch.Tensor]]
PROGRESS_EVERY = 20  # optimiser steps between progress-bar loss updates (each one waits for the GPU)


@dataclass(frozen=True)
class EpochStats:
    loss: float
    images: int
    seconds: float
    lr: float
    stopped_after: int | None = None  # batches trained when a stop signal ended the epoch early

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Predictions:
    """Probabilities and labels ([N, L], labels may hold NaN) and the mean loss of one pass."""

    prob: np.ndarray
    labels: np.ndarray
    loss: float


def _to_device(images: torch.Tensor, precision: Precision) -> torch.Tensor:
    memory_format = torch.channels_last if precision.channels_last else torch.contiguous_format
    return images.to(precision.device, non_blocking=True, memory_format=memory_format)


def _no_sync(model: nn.Module, stepping: bool) -> contextlib.AbstractContextManager[Any]:
    no_sync = getattr(model, "no_sync", None)  # DistributedDataParallel's
    return contextlib.nullcontext() if stepping or no_sync is None else no_sync()


def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    scaler: torch.amp.GradScaler,
    loader: Batches,
    precision: Precision,
    *,
    ema: AveragedModel | None = None,
    clip_grad_norm: float | None = None,
    accumulate: int = 1,
    description: str = "train",
    progress: bool = True,
    stop: Callable[[], bool] | None = None,
) -> EpochStats:
    """One pass over `loader`. With `accumulate` k, the gradients of k batches (each loss / k) are summed
    before one optimiser step, schedule step and EMA update; the epoch's last group may be shorter."""
    model.train()
    # The loss is summed on the device: reading it every step (`.item()`) would wait for the GPU each time.
    start, total_loss, seen = time.perf_counter(), torch.zeros((), device=precision.device), 0
    bar = tqdm(loader, desc=description, file=sys.stderr, disable=not progress, leave=False, dynamic_ncols=True)
    batches = len(loader)
    optimizer.zero_grad(set_to_none=True)
    for index, (images, targets) in enumerate(bar):
        images, targets = _to_device(images, precision), targets.to(precision.device, non_blocking=True)
        stepping = not (index + 1) % accumulate or index + 1 == batches
        # DDP: gradients are averaged over the ranks once per optimiser step, not after every accumulated batch
        with _no_sync(model, stepping):
            with precision.autocast():
                loss = criterion(model(images), targets)
            scaler.scale(loss / accumulate).backward()
        if not stepping:
            total_loss += loss.detach().float() * len(images)
            seen += len(images)
            continue
        if clip_grad_norm is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update_parameters(model)
        total_loss += loss.detach().float() * len(images)
        seen += len(images)
        if progress and not index % PROGRESS_EVERY:
            bar.set_postfix(loss=f"{total_loss.item() / seen:.4f}", refresh=False)
        if stop is not None and stop() and index + 1 < batches:  # after an optimiser step: a clean place to stop
            bar.close()
            return EpochStats(total_loss.item() / max(1, seen), seen, time.perf_counter() - start,
                              float(scheduler.get_last_lr()[0]), stopped_after=index + 1)  # fmt: skip
    mean_loss = total_loss.item() / max(1, seen)
    return EpochStats(mean_loss, seen, time.perf_counter() - start, float(scheduler.get_last_lr()[0]))


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    loader: Batches,
    precision: Precision,
    *,
    progress: bool = True,
    softmax: bool = False,
) -> Predictions:
    """Probabilities for every sample of `loader`, in order, and the mean loss.

    Sigmoid per label (binary, multi-label), or a softmax over the labels (multi-class).
    """
    model.eval()
    probs, labels, total_loss = [], [], 0.0
    bar = tqdm(loader, desc="eval", file=sys.stderr, disable=not progress, leave=False, dynamic_ncols=True)
    for images, targets in bar:
        images, targets = _to_device(images, precision), targets.to(precision.device, non_blocking=True)
        with precision.autocast():
            logits = model(images)
        total_loss += criterion(logits, targets).item() * len(images)
        activation = torch.softmax(logits.float(), dim=1) if softmax else torch.sigmoid(logits.float())
        probs.append(activation.cpu().numpy())
        labels.append(targets.cpu().numpy())
    count = sum(len(p) for p in probs)
    return Predictions(np.concatenate(probs), np.concatenate(labels), total_loss / max(1, count))
