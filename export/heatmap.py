"""Class-activation maps inside the graph: per-location logit contributions whose spatial mean is the logit.

ConvNeXt's head is global-average-pool -> LayerNorm -> Linear. LayerNorm acts on the pooled vector
p = mean_ij f_ij, so its mean mu and scale sigma = sqrt(var(p) + eps) are per-image constants and the
head is affine in p: logit = W (gamma * (p - mu) / sigma + beta) + b. Applying the same affine map at each
location, c_ij = W (gamma * (f_ij - mu) / sigma) + W beta + b, and averaging over locations gives
mean_ij c_ij = W (gamma * (p - mu) / sigma) + W beta + b = logit, exactly. ResNet's pool -> Linear is the
special case without the normalisation: c_ij = W f_ij + b. The probabilities still come from the network's
own head, so adding the maps changes no prediction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.convnext import ConvNeXt
from torchvision.models.resnet import ResNet

from medcore.record import Task


class ExplainedModel(nn.Module):
    """A logits network -> (probabilities [N, L], heatmaps [N, L, h, w]) with mean(heatmaps) == logits."""

    def __init__(self, model: nn.Module, task: Task) -> None:
        super().__init__()
        if not isinstance(model, ConvNeXt | ResNet):
            raise TypeError(f"heatmaps need a torchvision ConvNeXt or ResNet, got {type(model).__name__}")
        self.model = model
        self.softmax = Task(task) is Task.MULTICLASS

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = _features(self.model, x)
        logits, heatmaps = _head(self.model, features)
        probabilities = torch.softmax(logits, dim=1) if self.softmax else torch.sigmoid(logits)
        return probabilities, heatmaps


def _features(model: ConvNeXt | ResNet, x: torch.Tensor) -> torch.Tensor:
    """The last feature map [N, C, h, w], before the global pool."""
    if isinstance(model, ConvNeXt):
        result: torch.Tensor = model.features(x)
        return result
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    return model.layer4(model.layer3(model.layer2(model.layer1(x))))


def _head(model: ConvNeXt | ResNet, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits from the network's own head, per-location contributions) for a feature map."""
    if isinstance(model, ResNet):
        linear = model.fc
        logits = linear(torch.flatten(model.avgpool(features), 1))
        return logits, F.conv2d(features, linear.weight[:, :, None, None], linear.bias)
    norm, linear = model.classifier[0], model.classifier[2]
    logits = model.classifier(model.avgpool(features))
    pooled = features.mean(dim=(2, 3))
    mu = pooled.mean(dim=1)[:, None, None, None]
    sigma = torch.sqrt(pooled.var(dim=1, unbiased=False) + norm.eps)[:, None, None, None]
    scaled = (features - mu) / sigma * norm.weight[None, :, None, None]
    bias = linear.weight @ norm.bias + linear.bias
    return logits, F.conv2d(scaled, linear.weight[:, :, None, None], bias)
