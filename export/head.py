"""The network plus its task's activation (and its heatmaps), as the exported graph computes them."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from export.parity import Reference
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


def torch_reference(model: nn.Module) -> Reference:
    """PyTorch outputs (eval mode, fp32, CPU) of a model that ends in its activation (and may add heatmaps)."""
    model = model.eval()

    def run(batch: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            out = model(torch.from_numpy(batch))
        return [t.numpy() for t in out] if isinstance(out, tuple) else [out.numpy()]

    return run
