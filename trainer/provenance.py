"""Build the model record that every checkpoint carries: labels, recipe, thresholds and provenance."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import sklearn
import torch
import torchvision

from medcore.record import ModelRecord, Preprocessing, Provenance, Task
from trainer.config import TrainConfig
from trainer.models import ModelSpec

_REPO = Path(__file__).resolve().parents[1]


def git_commit(repo: Path = _REPO) -> str | None:
    """HEAD of the repository holding this code, or None outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def software_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "scikit-learn": sklearn.__version__,
        "cuda": torch.version.cuda or "none",
    }


def build_record(
    *,
    config: TrainConfig,
    spec: ModelSpec,
    task: Task,
    labels: tuple[str, ...],
    recipe: Preprocessing,
    thresholds: dict[str, float],
    data_description: dict[str, Any],
    metrics: dict[str, Any],
    code_commit: str | None,
) -> ModelRecord:
    architecture = f"{spec.arch} (stem_stride={spec.stem_stride}, in_channels={spec.in_channels})"
    return ModelRecord(
        name=config.model_name,
        version=config.version,
        task=task,
        labels=labels,
        thresholds=thresholds,
        preprocessing=recipe,
        intended_use=config.intended_use.to_record(),
        provenance=Provenance(
            architecture=architecture,
            data=data_description,
            code_commit=code_commit,
            config=config.to_dict(),
            metrics=metrics,
            software=software_versions(),
        ),
    )
