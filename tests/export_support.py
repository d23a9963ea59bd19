"""Tiny real checkpoints for the export tests: real torchvision networks, seeded random weights."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch
from data_location import DATA

from export import ExportReport, export_onnx
from medcore.record import ModelRecord, Preprocessing, Provenance, Task
from trainer.checkpoint import Checkpoint, save_checkpoint
from trainer.models import ModelSpec, build_model

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = DATA  # ../shared/data beside the clone, else the sample in tests/data
KERMANY = SHARED_DATA / "kermany_chest_xray_subset" / "images"
COVID = SHARED_DATA / "covid_chestxray_ieee8023_subset" / "images"
PNEUMONIAMNIST = SHARED_DATA / "pneumoniamnist" / "pneumoniamnist_reconstructed_v2_splits.npz"
# What the trainer writes into provenance.data: the evaluation tool finds the dataset from it.
TRAINING_DATA = {"kind": "medmnist", "path": str(PNEUMONIAMNIST)}


def make_record(
    *, task: Task = Task.BINARY, labels: tuple[str, ...] = ("pneumonia",), size: int = 28, arch: str = "convnext_atto"
) -> ModelRecord:
    return ModelRecord(
        name="test-pneumonia",
        version="0.0.1",
        task=task,
        labels=labels,
        thresholds=dict.fromkeys(labels, 0.5),
        preprocessing=Preprocessing(height=size, width=size, channels=1, mean=(0.5,), std=(0.25,)),
        provenance=Provenance(architecture=arch, data=TRAINING_DATA),
    )


def make_checkpoint(
    path: Path,
    *,
    arch: str = "convnext_atto",
    task: Task = Task.BINARY,
    labels: tuple[str, ...] = ("pneumonia",),
    size: int = 28,
    seed: int = 0,
) -> Checkpoint:
    """Build a seeded, untrained network and save it as a trainer checkpoint at `path`."""
    torch.manual_seed(seed)
    spec = ModelSpec(arch, num_outputs=len(labels), in_channels=1, stem_stride=2)
    model = build_model(spec)
    checkpoint = Checkpoint(
        spec=spec,
        record=make_record(task=task, labels=labels, size=size, arch=arch),
        model_state=model.state_dict(),
        epoch=0,
        config={"seed": seed},
    )
    save_checkpoint(checkpoint, path)
    return checkpoint


@functools.cache
def shared_export() -> tuple[Checkpoint, ExportReport]:
    """One binary ConvNeXt checkpoint and its ONNX export, made once per test process (read-only for tests)."""
    folder = Path(tempfile.mkdtemp(prefix="export-tests-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    checkpoint = make_checkpoint(folder / "model.pt")
    return checkpoint, export_onnx(folder / "model.pt", folder / "model.onnx")


def make_trained_checkpoint(path: Path, *, steps: int = 80, seed: int = 0) -> Checkpoint:
    """A tiny ConvNeXt trained briefly (AdamW, batch 32) on PneumoniaMNIST training images, saved at `path`.

    The images come through the trainer's data layer and medcore's preprocessing (`split_inputs`), so the
    network has seen what chest films look like: features an out-of-distribution score can tell apart.
    """
    from export.inputs import split_inputs

    checkpoint = make_checkpoint(path, seed=seed)
    model = build_model(checkpoint.spec)
    model.load_state_dict(checkpoint.model_state)
    train = split_inputs(checkpoint.record, "train", 1024, seed=seed)
    assert train.labels is not None
    images, labels = torch.from_numpy(train.batch), torch.from_numpy(train.labels).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, len(images), (32,), generator=generator)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images[rows]), labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained = Checkpoint(
        spec=checkpoint.spec, record=checkpoint.record, model_state=model.state_dict(), epoch=1, config={"seed": seed}
    )
    save_checkpoint(trained, path)
    return trained
