"""Model factory: torchvision ConvNeXt (incl. small variants fit for a CPU) and ResNet50.

Every model takes `in_channels` inputs (1 for radiographs, N for microscopy) and returns
`num_outputs` logits. Weights only ever come from a local file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import convnext as tv_convnext
from torchvision.models import resnet50

from trainer.architectures import ARCHITECTURES, CONVNEXT_SIZES


@dataclass(frozen=True)
class ModelSpec:
    """What `build_model` needs; stored in every checkpoint so export can rebuild the network."""

    arch: str
    num_outputs: int
    in_channels: int = 1
    stem_stride: int = 4
    drop_path: float = 0.1

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"Invalid architecture {self.arch!r}. Only {', '.join(ARCHITECTURES)} are supported.")
        if self.stem_stride not in (1, 2, 4):
            raise ValueError(f"stem_stride must be 1, 2 or 4, got {self.stem_stride}")
        if self.num_outputs < 1 or self.in_channels < 1:
            raise ValueError(f"num_outputs and in_channels must be >= 1, got {self.num_outputs}, {self.in_channels}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(**data)


def build_model(spec: ModelSpec) -> nn.Module:
    """Build an untrained network for `spec`."""
    if spec.arch == "resnet50":
        return _build_resnet50(spec)
    return _build_convnext(spec)


def _build_convnext(spec: ModelSpec) -> nn.Module:
    dims, depths = CONVNEXT_SIZES[spec.arch]
    settings = [
        tv_convnext.CNBlockConfig(dims[i], dims[i + 1] if i + 1 < len(dims) else None, depths[i])
        for i in range(len(dims))
    ]
    model = tv_convnext.ConvNeXt(settings, stochastic_depth_prob=spec.drop_path, num_classes=spec.num_outputs)
    # The patchify stem: kernel == stride, except a 3x3 "same" conv when the input is already small.
    kernel, padding = (3, 1) if spec.stem_stride == 1 else (spec.stem_stride, 0)
    stem = model.features[0]
    stem[0] = nn.Conv2d(spec.in_channels, dims[0], kernel_size=kernel, stride=spec.stem_stride, padding=padding)
    return model


def _build_resnet50(spec: ModelSpec) -> nn.Module:
    model = resnet50(num_classes=spec.num_outputs)
    if spec.stem_stride == 4:
        model.conv1 = nn.Conv2d(spec.in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    else:
        model.conv1 = nn.Conv2d(spec.in_channels, 64, kernel_size=3, stride=spec.stem_stride, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def load_local_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load a local state dict (e.g. ImageNet weights saved by torchvision) into `model`.

    A stem with another channel count is adapted by averaging over the RGB filters and
    repeating; tensors whose shape still differs (the classifier head) are skipped.
    Returns the names of the tensors that were not loaded.
    """
    source = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(source, dict) and "model_state" in source:
        source = source["model_state"]
    target = model.state_dict()
    skipped = []
    for name, tensor in target.items():
        value = source.get(name)
        other_channels = value is not None and value.ndim == 4 and value.shape[1] != tensor.shape[1]
        if other_channels and value.shape[0] == tensor.shape[0]:
            value = value.mean(dim=1, keepdim=True).repeat(1, tensor.shape[1], 1, 1)
        if value is None or value.shape != tensor.shape:
            skipped.append(name)
            continue
        target[name] = value
    model.load_state_dict(target)
    return skipped
