"""Real (short) training runs through the command line: outputs, checkpoint, record, resume."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from trainer_support import PNEUMONIAMNIST, QUICK_FLAGS, make_kermany_tree

from medcore.imaging import load_model_input
from medcore.record import ModelRecord, Task
from trainer.checkpoint import load_checkpoint, model_from_checkpoint
from trainer.cli import main
from trainer.data import ManifestDataset
from trainer.data.kermany import load_kermany

pytestmark = pytest.mark.slow

RUN_FLAGS = ["--data-kind", "medmnist", "--data-path", str(PNEUMONIAMNIST), "--limit", "64", *QUICK_FLAGS]


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("run") / "out"
    assert main(["train", *RUN_FLAGS, "--epochs", "2", "--output-dir", str(output)]) == 0
    return output


def test_run_writes_outputs_and_a_valid_record(two_epoch_run: Path) -> None:
    for name in ("best.pt", "last.pt", "metrics.json", "config.yaml", "roc.png", "confusion_matrix.png"):
        assert (two_epoch_run / name).is_file(), name
    config = yaml.safe_load((two_epoch_run / "config.yaml").read_text())
    assert (config["epochs"], config["data"]["limit"], config["model"]["stem_stride"]) == (2, 64, 2)

    best = load_checkpoint(two_epoch_run / "best.pt")
    record = ModelRecord.from_dict(best.record.to_dict())  # validates again from plain JSON
    assert record.task is Task.BINARY and record.labels == ("pneumonia",)
    assert 0.0 <= record.thresholds["pneumonia"] <= 1.0
    recipe = record.preprocessing
    assert (recipe.height, recipe.width, recipe.channels, recipe.crop, recipe.interpolation) == (
        28,
        28,
        1,
        "center_square",
        "bicubic",
    )
    assert 0.3 < recipe.mean[0] < 0.8 and 0.05 < recipe.std[0] < 0.4  # measured on the training split
    assert best.config == config  # the resolved config travels in the checkpoint
    provenance = record.provenance
    assert provenance.architecture.startswith("convnext_atto")
    assert provenance.data["files"][PNEUMONIAMNIST.name] == hashlib.sha256(PNEUMONIAMNIST.read_bytes()).hexdigest()
    assert provenance.code_commit is None or len(provenance.code_commit) == 40
    assert {"torch", "python", "numpy"} <= set(provenance.software)
    assert set(provenance.metrics) >= {"val", "test"}

    metrics = json.loads((two_epoch_run / "metrics.json").read_text())
    test = metrics["test"]
    assert test["n"] == 64 and test["threshold"] == record.thresholds["pneumonia"]
    assert set(test) >= {"auroc", "accuracy", "balanced_accuracy", "f1", "precision", "recall", "specificity"}
    assert sum(map(sum, test["confusion_matrix"])) == 64
    assert metrics["val"]["n"] == 64 and len(metrics["history"]) == 2
    best_row = max(metrics["history"], key=lambda row: row["val_auroc"])  # best_epoch counts from 1, as logged
    assert metrics["best_epoch"] == best_row["epoch"] + 1 and metrics["best_epoch"] in (1, 2)
    assert test == provenance.metrics["test"]

    model = model_from_checkpoint(best)
    with torch.inference_mode():
        logits = model(torch.zeros(2, 1, 28, 28))
    assert logits.shape == (2, 1)


def test_checkpoint_recipe_matches_medcore_on_a_full_size_xray(two_epoch_run: Path, tmp_path: Path) -> None:
    """A full-resolution X-ray through the trainer's eval dataset equals medcore's load_model_input."""
    recipe = load_checkpoint(two_epoch_run / "best.pt").record.preprocessing
    split = load_kermany(make_kermany_tree(tmp_path / "k", {"train": 1, "val": 1, "test": 2})).split("test")
    assert split.paths is not None
    dataset = ManifestDataset(split, recipe)
    for index, path in enumerate(split.paths):
        assert np.array_equal(dataset[index][0].numpy(), load_model_input(path.read_bytes(), recipe))


def test_resume_continues_from_the_last_epoch(
    two_epoch_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    output = tmp_path / "out"
    shutil.copytree(two_epoch_run, output)
    before = load_checkpoint(output / "last.pt")
    assert before.epoch == 1
    with caplog.at_level("INFO", logger="trainer"):
        assert main(["train", *RUN_FLAGS, "--epochs", "3", "--output-dir", str(output), "--resume"]) == 0
    assert "resuming from" in caplog.text
    assert "epoch 1/3" not in caplog.text and "epoch 3/3" in caplog.text
    after = load_checkpoint(output / "last.pt")
    assert after.epoch == 2
    history = after.training_state["history"]
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert history[:2] == before.training_state["history"]  # earlier epochs were kept, not re-run
    # 64 samples / batch 32 = 2 optimizer steps per epoch: 3 epochs in all, not 1 after a restart.
    steps = {int(s["step"]) for s in after.training_state["optimizer"]["state"].values()}
    assert steps == {6}
    assert after.training_state["scheduler"]["last_epoch"] == 6


def test_refuses_to_overwrite_a_run_without_resume(two_epoch_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", *RUN_FLAGS, "--epochs", "1", "--output-dir", str(two_epoch_run)]) == 1
    err = capsys.readouterr().err
    assert "already holds a run (last.pt, best.pt, metrics.json): pass --resume" in err and "Traceback" not in err


def test_kermany_folder_training_run_with_ema(tmp_path: Path) -> None:
    root = make_kermany_tree(tmp_path / "chest_xray", {"train": 4, "val": 3, "test": 3})
    output = tmp_path / "out"
    flags = ["--data-kind", "kermany", "--data-path", str(root), "--epochs", "1", "--output-dir", str(output)]
    size = ["--set", "preprocessing.height=32", "--set", "preprocessing.width=32", "--set", "optim.ema_decay=0.5"]
    assert main(["train", *flags, *QUICK_FLAGS, *size, "--batch-size", "4"]) == 0  # 2 steps: EMA != online
    best = load_checkpoint(output / "best.pt")
    assert (best.record.preprocessing.height, best.record.preprocessing.width) == (32, 32)
    assert best.record.provenance.data["kind"] == "kermany"
    assert len(best.record.provenance.data["listing_sha256"]) == 64
    assert json.loads((output / "metrics.json").read_text())["test"]["n"] == 6
    # The checkpoints' model is the averaged one; the online weights travel in last.pt's training state.
    last = load_checkpoint(output / "last.pt")
    raw = last.training_state["raw_model_state"]
    assert last.training_state["ema"] is not None and raw is not None
    assert any(not torch.equal(raw[k], v) for k, v in last.model_state.items() if v.is_floating_point())
    assert all(torch.equal(last.model_state[k], v) for k, v in best.model_state.items())
