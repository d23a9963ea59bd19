"""Optimisers (AdamW, Adam, SGD) without weight decay on norms and biases, and per-step LR schedules.

Schedules are per optimiser step (after gradient accumulation), with a linear warm-up over
`warmup_epochs` in front of each: "cosine" decays to `min_lr` at the last step, "exponential"
multiplies the rate by `gamma` every epoch (the pneumonia study's schedule), "step" by `gamma`
every `step_epochs` epochs, "constant" keeps it. All are `LambdaLR`, so resume restores them exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from trainer.config import OPTIMIZERS, SCHEDULES, OptimConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Two groups of the trainable parameters: weights (decayed) and biases / normalisation (ndim <= 1, not)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else no_decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """The configured optimiser over `parameter_groups` (AdamW's decay is decoupled; Adam's and SGD's are L2)."""
    groups = parameter_groups(model, config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    raise ValueError(f"Invalid optimizer {config.optimizer!r}. Only {', '.join(OPTIMIZERS)} are supported.")


def lr_factor(config: OptimConfig, steps_per_epoch: int, epochs: int) -> Callable[[int], float]:
    """Step index -> multiple of `config.lr` for the configured schedule."""
    if config.schedule not in SCHEDULES:
        raise ValueError(f"Invalid schedule {config.schedule!r}. Only {', '.join(SCHEDULES)} are supported.")
    steps_per_epoch = max(1, steps_per_epoch)
    total = max(1, steps_per_epoch * epochs)
    warmup = min(round(config.warmup_epochs * steps_per_epoch), total - 1)
    floor = config.min_lr / config.lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup - 1))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        epoch = (step - warmup) // steps_per_epoch
        if config.schedule == "exponential":
            return max(floor, config.gamma**epoch)
        if config.schedule == "step":
            return max(floor, config.gamma ** (epoch // config.step_epochs))
        return 1.0

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: OptimConfig, steps_per_epoch: int, epochs: int
) -> LambdaLR:
    """The schedule as a LambdaLR stepped once per optimiser step; `steps_per_epoch` counts optimiser steps."""
    return LambdaLR(optimizer, lr_factor(config, steps_per_epoch, epochs))
