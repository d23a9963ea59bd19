"""`trainer compare` and the Kermany layout without val/: val carved out of train by patient, stratified."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from trainer_support import PNEUMONIAMNIST, QUICK_FLAGS, make_kermany_tree

from trainer.cli import main
from trainer.compare import run_configs, write_comparison
from trainer.config import TrainConfig, load_config
from trainer.data.kermany import load_kermany


def test_kermany_without_val_carves_it_out_of_train_by_patient(tmp_path: Path, shared_data: Path) -> None:
    root = make_kermany_tree(tmp_path / "k", {"train": 20, "test": 3})
    assert not (root / "val").exists()
    data = load_kermany(root, val_fraction=0.25, seed=0)
    train, val, test = data.split("train"), data.split("val"), data.split("test")
    assert len(train) + len(val) == 40 and len(test) == 6 and len(val) > 0
    assert 0 < val.labels.mean() < 1  # stratified: both classes reach val
    assert train.patient_ids is not None and val.patient_ids is not None and test.patient_ids is not None
    assert not set(train.patient_ids) & set(val.patient_ids)
    assert all(p.startswith("test/") for p in test.patient_ids)  # test's numbering is its own
    assert data.description["leakage"]["patients_in_several_splits"] == 0
    assert np.array_equal(load_kermany(root, val_fraction=0.25, seed=0).split("val").labels, val.labels)


def test_run_configs_change_only_arch_name_and_output() -> None:
    base = load_config(overrides={"output_dir": "runs/cmp", "data.kind": "kermany", "epochs": 3})
    configs = run_configs(base, ["convnext_atto", "resnet50"])
    assert {a: c.output_dir for a, c in configs.items()} == {
        "convnext_atto": "runs/cmp/convnext_atto",
        "resnet50": "runs/cmp/resnet50",
    }
    assert configs["resnet50"].model.arch == "resnet50" and configs["resnet50"].epochs == 3
    assert configs["resnet50"].name == "kermany-resnet50" and base.model.arch == "convnext_atto"
    with pytest.raises(ValueError, match=r"Invalid architecture 'vgg16'\. Only convnext_atto"):
        run_configs(base, ["convnext_atto", "vgg16"])
    with pytest.raises(ValueError, match="at least two architectures"):
        run_configs(base, ["resnet50"])


def test_comparison_table_from_run_metrics(tmp_path: Path) -> None:
    def metrics(accuracy: float) -> dict:
        test = {"accuracy": accuracy, "precision": 0.8, "recall": 0.9, "f1": 0.85, "auroc": 0.93, "n": 624,
                "threshold": 0.4, "confusion_matrix": [[200, 34], [39, 351]]}  # fmt: skip
        intervals = {"accuracy": [accuracy - 0.02, accuracy + 0.02], "sensitivity": [0.87, 0.93]}
        return {"task": "binary", "label": "pneumonia", "test": test, "wall_seconds": 12.0,
                "test_intervals": {"intervals": intervals, "resamples": 1000}}  # fmt: skip

    summary = write_comparison(tmp_path, {"convnext_tiny": metrics(0.88), "resnet50": metrics(0.86)}, TrainConfig())
    assert summary["models"]["resnet50"]["recall"] == {"value": 0.9, "ci": [0.87, 0.93]}
    text = (tmp_path / "compare.md").read_text()
    assert "| convnext_tiny | 0.880 (0.860 - 0.900) | 0.800 (n/a) | 0.900 (0.870 - 0.930)" in text
    assert "| ResNet50 (study) | 0.88 | 0.82 | 0.99 | 0.90 |" in text
    assert (tmp_path / "confusion_matrices.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "compare.json").read_text())["models"]["convnext_tiny"]["n"] == 624


@pytest.mark.slow
def test_compare_cli_trains_both_and_writes_the_table(tmp_path: Path, shared_data: Path) -> None:
    if not PNEUMONIAMNIST.is_file():
        pytest.skip(f"needs {PNEUMONIAMNIST} (../shared beside the clone)")
    output = tmp_path / "cmp"
    flags = ["--data-kind", "medmnist", "--data-path", str(PNEUMONIAMNIST), "--limit", "32", "--epochs", "1",
             "--archs", "convnext_atto,resnet50", "--output-dir", str(output),
             "--set", "report.bootstrap=100"]  # fmt: skip
    quick = [f for f in QUICK_FLAGS if f not in ("--arch", "convnext_atto")]
    assert main(["compare", *flags, *quick]) == 0
    for arch in ("convnext_atto", "resnet50"):
        assert (output / arch / "report.md").is_file() and (output / arch / "best.pt").is_file()
    summary = json.loads((output / "compare.json").read_text())
    assert set(summary["models"]) == {"convnext_atto", "resnet50"}
    assert summary["models"]["resnet50"]["auroc"]["ci"] is not None
    assert (output / "compare.md").is_file() and (output / "confusion_matrices.png").is_file()
