"""The in-graph heatmaps: per-location contributions that average to the logit, and that point at the finding."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from export_support import shared_export
from torch import nn
from torchvision.models import convnext as tv_convnext

from export.heatmap import ExplainedModel
from export.inputs import split_inputs
from medcore.record import Task
from trainer.checkpoint import model_from_checkpoint
from trainer.models import ModelSpec, build_model

MEAN_TOLERANCE = 1e-4


def _perturbed(arch: str, outputs: int, seed: int) -> nn.Module:
    """A seeded network whose LayerNorm/BatchNorm affine terms are not the identity (the hard case)."""
    torch.manual_seed(seed)
    model = build_model(ModelSpec(arch, outputs, in_channels=1, stem_stride=2)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return model


@pytest.mark.parametrize(
    ("arch", "task", "outputs"),
    [
        ("convnext_atto", Task.MULTILABEL, 3),
        ("convnext_atto", Task.MULTICLASS, 3),
        ("resnet50", Task.BINARY, 1),
    ],
)
def test_contributions_average_to_the_logit(arch: str, task: Task, outputs: int) -> None:
    model = _perturbed(arch, outputs, seed=3)
    explained = ExplainedModel(model, task).eval()
    x = torch.randn(4, 1, 64, 64)
    with torch.inference_mode():
        probabilities, heatmaps = explained(x)
        logits = model(x)
    assert heatmaps.shape == (4, outputs, 4, 4) if arch == "convnext_atto" else heatmaps.shape[:2] == (4, outputs)
    scale = max(1.0, float(logits.abs().max()))
    assert float((heatmaps.mean(dim=(2, 3)) - logits).abs().max()) <= MEAN_TOLERANCE * scale
    expected = torch.softmax(logits, 1) if task is Task.MULTICLASS else torch.sigmoid(logits)
    assert torch.equal(probabilities, expected), "adding the maps must not change the probabilities"
    assert float(heatmaps.std()) > 0, "the maps should vary over locations"


@pytest.mark.slow
def test_exported_heatmaps_average_to_pytorch_logits() -> None:
    checkpoint, report = shared_export()
    session = ort.InferenceSession(str(report.output), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities", "heatmaps"]
    batch = split_inputs(checkpoint.record, "val", 6).batch
    probabilities, heatmaps = session.run(None, {"input": batch})
    with torch.inference_mode():
        logits = model_from_checkpoint(checkpoint)(torch.from_numpy(batch)).numpy()
    assert heatmaps.dtype == np.float32 and heatmaps.shape[:2] == (6, 1)
    np.testing.assert_allclose(heatmaps.mean(axis=(2, 3)), logits, rtol=0, atol=MEAN_TOLERANCE)
    np.testing.assert_allclose(probabilities, 1 / (1 + np.exp(-logits)), rtol=0, atol=1e-6)
    assert report.parity.heatmap_consistency is not None and report.parity.heatmap_consistency <= 1e-5


def _planted(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """64x64 noise; positives carry a bright 16x16 square in one cell of the 4x4 grid the map resolves."""
    images = rng.normal(0.0, 1.0, size=(n, 1, 64, 64)).astype(np.float32)
    labels = rng.integers(0, 2, size=n)
    cells = rng.integers(0, 16, size=n)
    for i in np.flatnonzero(labels):
        row, col = divmod(int(cells[i]), 4)
        images[i, 0, row * 16 : row * 16 + 16, col * 16 : col * 16 + 16] += 2.5
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.float32))[:, None], np.where(labels, cells, -1)


def test_map_peaks_on_the_planted_bright_region() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    blocks = [
        tv_convnext.CNBlockConfig(16, 32, 1),
        tv_convnext.CNBlockConfig(32, 64, 1),
        tv_convnext.CNBlockConfig(64, None, 1),
    ]
    model = tv_convnext.ConvNeXt(blocks, stochastic_depth_prob=0.0, num_classes=1)
    model.features[0][0] = nn.Conv2d(1, 16, kernel_size=4, stride=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):  # a few seconds on two cores
        x, y, _ = _planted(32, rng)
        loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, y, cells = _planted(200, rng)
    with torch.inference_mode():
        probabilities, heatmaps = ExplainedModel(model.eval(), Task.BINARY)(x)
    positive = cells >= 0
    accuracy = float(((probabilities[:, 0] >= 0.5).numpy() == positive).mean())
    assert accuracy >= 0.9, f"the tiny model did not learn the task (accuracy {accuracy:.2f})"
    assert heatmaps.shape == (200, 1, 4, 4)
    peaks = heatmaps[:, 0].flatten(1).argmax(dim=1).numpy()
    hit_rate = float((peaks[positive] == cells[positive]).mean())
    assert hit_rate >= 0.9, f"the map peaks on the planted region in only {hit_rate:.0%} of positive images"
