"""`export.evaluate`: an ONNX file scored through the trainer's data loading and metrics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from export_support import PNEUMONIAMNIST, REPO, shared_export

from export.evaluate import main as evaluate_main
from export.evaluation import data_config_from_record, evaluate_onnx
from export.head import ProbabilityModel
from medcore.imaging import stack_batch
from trainer.checkpoint import Checkpoint, model_from_checkpoint
from trainer.data import ManifestDataset, load_data
from trainer.metrics import binary_metrics

pytestmark = pytest.mark.slow
LIMIT = 200


@pytest.fixture(scope="module")
def exported() -> tuple[Checkpoint, Path]:
    checkpoint, report = shared_export()
    return checkpoint, report.output


def test_onnx_metrics_equal_pytorch_metrics_on_the_same_split(exported: tuple[Checkpoint, Path]) -> None:
    checkpoint, model_path = exported
    config = data_config_from_record(checkpoint.record, limit=LIMIT)
    assert config.path == str(PNEUMONIAMNIST)
    metrics = evaluate_onnx(model_path, data=config, splits=("test",))
    got = metrics["splits"]["test"]["labels"]["pneumonia"]
    assert metrics["splits"]["test"]["n"] == got["n"] == LIMIT
    assert metrics["model"]["name"] == checkpoint.record.name and metrics["task"] == "binary"

    split = load_data(config).split("test")
    dataset = ManifestDataset(split, checkpoint.record.preprocessing)
    model = ProbabilityModel(model_from_checkpoint(checkpoint), checkpoint.record.task)
    with torch.inference_mode():
        prob = model(torch.from_numpy(stack_batch([dataset.model_input(i) for i in range(len(dataset))]))).numpy()
    expected = binary_metrics(split.labels[:, 0], prob[:, 0], 0.5)
    assert got["confusion_matrix"] == expected["confusion_matrix"]
    for key in ("auroc", "average_precision", "accuracy", "f1", "sensitivity", "specificity"):
        assert got[key] == pytest.approx(expected[key], abs=1e-6), key
    assert 0.0 <= got["auroc"] <= 1.0 and np.isfinite(got["accuracy"])


def test_cli_writes_metrics_json(exported: tuple[Checkpoint, Path], tmp_path: Path) -> None:
    _, model_path = exported
    out = tmp_path / "metrics.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "export.evaluate",
            str(model_path),
            "--split",
            "val",
            "test",
            "--limit",
            "100",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    assert set(metrics["splits"]) == {"val", "test"}
    for split in ("val", "test"):
        labels = metrics["splits"][split]["labels"]
        assert set(labels) == {"pneumonia"}
        assert {"auroc", "accuracy", "f1", "sensitivity", "specificity"} <= set(labels["pneumonia"])
    assert "test" in result.stdout and "auroc" in result.stdout


def test_cli_fails_clearly_on_missing_data(
    exported: tuple[Checkpoint, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, model_path = exported
    out = tmp_path / "m.json"
    assert evaluate_main([str(model_path), "--data-path", str(tmp_path / "none.npz"), "--out", str(out)]) == 1
    assert f"evaluation failed: MedMNIST file {tmp_path / 'none.npz'} does not exist" in capsys.readouterr().err
    assert not out.exists()
