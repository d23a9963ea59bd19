"""The network plus its task's activation (and its heatmaps), as the exported graph computes them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models.convnext import ConvNeXt
from torchvision.models.resnet import ResNet

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


def with_ood_reference(model: nn.Module, network: nn.Module, score: Callable[[np.ndarray], np.ndarray]) -> Reference:
    """`torch_reference(model)` plus a last output: `score` of the pooled features the network's head reads.

    The features are caught on their way into the head (ConvNeXt's `classifier`, before its LayerNorm;
    ResNet's `fc`), the tensor `export.ood.feature_tensor` finds in the graph.
    """
    if not isinstance(network, ConvNeXt | ResNet):
        raise TypeError(f"the out-of-distribution score needs a torchvision ConvNeXt or ResNet, got {type(network)}")
    head = network.classifier if isinstance(network, ConvNeXt) else network.fc
    base = torch_reference(model)
    caught: list[torch.Tensor] = []

    def keep(module: nn.Module, args: tuple[Any, ...]) -> None:
        caught.append(args[0].detach())

    def run(batch: np.ndarray) -> list[np.ndarray]:
        caught.clear()
        handle = head.register_forward_pre_hook(keep)
        try:
            outputs = base(batch)
        finally:
            handle.remove()
        return [*outputs, score(caught[-1].reshape(len(batch), -1).numpy())]

    return run
