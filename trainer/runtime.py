"""Where and how the computation runs: device, mixed precision, seeds and RNG state for exact resume."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


def resolve_device(name: str) -> torch.device:
    """ "auto" picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was requested but CUDA is not available; use cpu or auto")
    return device


AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (None: fp32), memory format and loss scaling of one run.

    The default (`resolve_precision`): bf16 where the GPU supports it, else fp16 with a GradScaler, and
    channels-last, on CUDA; fp32 on the CPU. The same settings run on the CPU when asked for (CPU autocast
    in bf16 or fp16, channels-last tensors): that is how the CUDA code paths are exercised without a GPU.
    """

    device: torch.device
    dtype: torch.dtype | None
    channels_last: bool = False

    @property
    def needs_scaler(self) -> bool:
        return self.dtype == torch.float16

    def place(self, model: nn.Module) -> nn.Module:
        """Move `model` to the device (channels-last when set: on CUDA, where convolutions run faster)."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device.type, enabled=self.needs_scaler)

    def describe(self) -> str:
        dtype = "fp32" if self.dtype is None else str(self.dtype).removeprefix("torch.")
        return f"{self.device} {dtype}{', channels-last' if self.channels_last else ''}"


def resolve_precision(
    device: torch.device, amp: bool, amp_dtype: str = "auto", channels_last: bool | None = None
) -> Precision:
    """`amp` with `amp_dtype` "auto": bf16 on a GPU that supports it, else fp16 (with a GradScaler), and no
    autocast on the CPU. "bf16" or "fp16" force that dtype on any device (CPU autocast on the CPU).
    `channels_last` None: on CUDA only."""
    cuda = device.type == "cuda"
    layout = cuda if channels_last is None else channels_last
    if not amp:
        return Precision(device, None, layout)
    if amp_dtype == "auto":
        if not cuda:
            return Precision(device, None, layout)
        return Precision(device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16, layout)
    if amp_dtype not in AMP_DTYPES:
        raise ValueError(f"Invalid amp_dtype {amp_dtype!r}. Only auto, bf16 and fp16 are supported.")
    return Precision(device, AMP_DTYPES[amp_dtype], layout)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG, in types `torch.load(weights_only=True)` accepts."""
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {**numpy_state, "state": {k: np.asarray(v).tolist() for k, v in numpy_state["state"].items()}},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy_state = state["numpy"]
    inner = {k: np.asarray(v, dtype=np.uint32) if k == "key" else v for k, v in numpy_state["state"].items()}
    np.random.set_state({**numpy_state, "state": inner})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
