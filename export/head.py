"""The network plus its task's activation, so the exported graph outputs probabilities."""

from __future__ import annotations

import torch
from torch import nn

from medcore.record import Task


class ProbabilityModel(nn.Module):
    """Wrap a logits network: softmax over labels for multiclass, a sigmoid per output otherwise."""

    def __init__(self, model: nn.Module, task: Task) -> None:
        super().__init__()
        self.model = model
        self.softmax = Task(task) is Task.MULTICLASS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return torch.softmax(logits, dim=1) if self.softmax else torch.sigmoid(logits)
