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
from trainer.config import HEADS


@dataclass(frozen=True)
class ModelSpec:
    """What `build_model` needs; stored in every checkpoint so export can rebuild the network.

    `head` "linear" is the architecture's own classifier; "mlp" is the microscopy study's head on the
    pooled features: Linear(features, head_hidden), Dropout(head_dropout), ReLU, Linear(head_hidden, outputs).
    """

    arch: str
    num_outputs: int
    in_channels: int = 1
    stem_stride: int = 4
    drop_path: float = 0.1
    head: str = "linear"
    head_hidden: int = 512
    head_dropout: float = 0.2

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"Invalid architecture {self.arch!r}. Only {', '.join(ARCHITECTURES)} are supported.")
        if self.stem_stride not in (1, 2, 4):
            raise ValueError(f"stem_stride must be 1, 2 or 4, got {self.stem_stride}")
        if self.num_outputs < 1 or self.in_channels < 1:
            raise ValueError(f"num_outputs and in_channels must be >= 1, got {self.num_outputs}, {self.in_channels}")
        if self.head not in HEADS:
            raise ValueError(f"Invalid head {self.head!r}. Only {', '.join(HEADS)} are supported.")
        if self.head_hidden < 1 or not 0.0 <= self.head_dropout < 1.0:
            raise ValueError(f"head_hidden must be >= 1 and head_dropout in [0, 1), got {self.head_hidden}, "
                             f"{self.head_dropout}")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(**data)


def build_model(spec: ModelSpec) -> nn.Module:
    """Build an untrained network for `spec`."""
    model = _build_resnet50(spec) if spec.arch == "resnet50" else _build_convnext(spec)
    if spec.head == "mlp":
        layer = head_layer(model)
        mlp = nn.Sequential(
            nn.Linear(layer.in_features, spec.head_hidden),
            nn.Dropout(spec.head_dropout),
            nn.ReLU(inplace=True),
            nn.Linear(spec.head_hidden, spec.num_outputs),
        )
        _set_head(model, mlp)
    return model


def head_prefix(model: nn.Module) -> str:
    """The state-dict prefix of the classification head: "fc." (ResNet) or "classifier.2." (ConvNeXt)."""
    return "fc." if hasattr(model, "fc") else "classifier.2."


def head_layer(model: nn.Module) -> nn.Linear:
    """The architecture's own output layer (before any MLP head replaces it)."""
    layer = model.get_submodule(head_prefix(model).rstrip("."))
    assert isinstance(layer, nn.Linear)
    return layer


def _set_head(model: nn.Module, head: nn.Module) -> None:
    if hasattr(model, "fc"):
        model.fc = head
    else:
        classifier = model.get_submodule("classifier")
        assert isinstance(classifier, nn.Sequential)
        classifier[2] = head


def freeze_backbone(model: nn.Module) -> int:
    """Train only the head: every parameter outside it stops requiring gradients. Returns how many were frozen.

    Normalisation statistics of a frozen ResNet still update in train mode (BatchNorm buffers); ConvNeXt's
    LayerNorms have none.
    """
    prefix = head_prefix(model)
    frozen = 0
    for name, parameter in model.named_parameters():
        if not name.startswith(prefix):
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


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


def _adapt_stem(value: torch.Tensor, tensor: torch.Tensor) -> torch.Tensor:
    """An RGB conv filter bank for a stem of N != 3 channels: the RGB mean, repeated N times, times 3 / N.

    As timm's `adapt_input_conv`: a grey image in every channel then gives the activations its RGB copy gave.
    """
    if value.ndim != 4 or value.shape[1] != 3 or tensor.shape[1] == 3 or value.shape[0] != tensor.shape[0]:
        return value
    channels = tensor.shape[1]
    return value.mean(dim=1, keepdim=True).repeat(1, channels, 1, 1) * (3.0 / channels)


def load_local_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load a local state dict (e.g. ImageNet weights saved by torchvision's `model.state_dict()`) into `model`.

    A 3-channel stem is averaged into a 1- or N-channel one (`_adapt_stem`). The head
    (`fc.` / `classifier.2.`) may differ and is kept at random init. Any other tensor that is missing
    or has another shape is an error naming the keys (a different architecture or a wrong file).
    Returns the names of the tensors kept at random init (the head's).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    source = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(source, dict) and "model_state" in source:
        source = source["model_state"]
    if not isinstance(source, dict):
        raise ValueError(f"{path} holds a {type(source).__name__}, not a state dict")
    target = model.state_dict()
    prefix = head_prefix(model)
    skipped, missing, mismatched = [], [], []
    for name, tensor in target.items():
        value = source.get(name)
        if value is not None:
            value = _adapt_stem(value, tensor)
        if value is not None and value.shape == tensor.shape:
            target[name] = value.to(tensor.dtype)
        elif name.startswith(prefix):
            skipped.append(name)
        elif value is None:
            missing.append(name)
        else:
            mismatched.append(f"{name} {tuple(value.shape)} vs {tuple(tensor.shape)}")
    unexpected = sorted(k for k in source if k not in target and not k.startswith(prefix))
    problems = [("missing", missing), ("shape mismatch (file vs model)", mismatched), ("unexpected", unexpected)]
    found = [f"{kind}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} ({len(keys)} in all)"
             for kind, keys in problems if keys]  # fmt: skip
    if found:
        raise ValueError(f"weights {path} do not fit this model; " + "; ".join(found))
    model.load_state_dict(target)
    return skipped
