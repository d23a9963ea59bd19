"""Checkpoints: written atomically, always carrying the model record and the resolved config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medcore.atomic import atomic_write
from medcore.record import ModelRecord
from trainer.models import ModelSpec, build_model

CHECKPOINT_FORMAT = 1


@dataclass
class Checkpoint:
    """Everything needed to resume training exactly, or to rebuild the model for export."""

    spec: ModelSpec
    record: ModelRecord
    model_state: dict[str, torch.Tensor]
    epoch: int
    config: dict[str, Any]
    training_state: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "spec": self.spec.to_dict(),
            "record": self.record.to_dict(),
            "model_state": self.model_state,
            "epoch": self.epoch,
            "config": self.config,
            "training_state": self.training_state,
        }


def save_checkpoint(checkpoint: Checkpoint, path: str | Path) -> None:
    """Write `checkpoint` so that a crash leaves either the old file or the new one, never half of one."""
    payload = checkpoint.to_payload()
    atomic_write(Path(path), lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint`; fails loudly on anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a checkpoint of format {CHECKPOINT_FORMAT} (found {found!r})")
    return Checkpoint(
        spec=ModelSpec.from_dict(payload["spec"]),
        record=ModelRecord.from_dict(payload["record"]),
        model_state=payload["model_state"],
        epoch=int(payload["epoch"]),
        config=payload["config"],
        training_state=payload.get("training_state", {}),
    )


def model_from_checkpoint(checkpoint: Checkpoint) -> nn.Module:
    """Rebuild the network and load its trained weights, in eval mode."""
    model = build_model(checkpoint.spec)
    model.load_state_dict(checkpoint.model_state)
    return model.eval()
