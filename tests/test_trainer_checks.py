"""Settings and data that cannot give a meaningful run stop before training, in one line, with a non-zero exit."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from data_location import DATA
from trainer_support import PNEUMONIAMNIST, QUICK_FLAGS

from medcore.record import Task
from trainer.checkpoint import load_checkpoint
from trainer.checks import check_input_size, check_labels, check_leakage, choose_stem_stride
from trainer.cli import main
from trainer.data import DataError, LabeledData, LabeledSplit
from trainer.data.tabular import load_csv

FLAGS = ["--data-kind", "medmnist", "--data-path", str(PNEUMONIAMNIST), "--limit", "16", *QUICK_FLAGS, "--epochs", "1"]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert "Traceback" not in err and len(lines) == 1, err
    return code, lines[0]


def test_28px_inputs_with_the_stride_4_stem_name_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = [f for f in FLAGS if f not in ("--stem-stride", "2")]
    code, line = run_cli(["train", *flags, "--stem-stride", "4", "--output-dir", str(tmp_path / "run")], capsys)
    assert code == 1 and "28x28" in line and "--stem-stride 2" in line
    assert not (tmp_path / "run" / "best.pt").exists()
    check_input_size("convnext_atto", 2, 28, 28)  # fits: 14 -> 7 -> 3 -> 1
    check_input_size("resnet50", 4, 28, 28)  # no such limit
    with pytest.raises(ValueError, match="use inputs of at least 8 px"):
        check_input_size("convnext_atto", 1, 6, 6)


def test_an_unset_stem_stride_is_chosen_from_the_input_size_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's one-liner (`--data-kind medmnist --data-path pneumoniamnist.npz`, nothing else) trains on 28 px."""
    assert [choose_stem_stride(s, s) for s in (224, 128, 64, 32, 28, 16)] == [4, 4, 4, 2, 1, 1]
    assert choose_stem_stride(224, 28) == 1  # the shorter side decides
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (line,) = [x for x in readme.splitlines() if "--data-kind medmnist" in x and "trainer train" in x]
    argv = line.split("python -m trainer ", 1)[1].split()
    assert argv == ["train", "--data-kind", "medmnist", "--data-path", "pneumoniamnist.npz"]  # as written
    argv[argv.index("pneumoniamnist.npz")] = str(PNEUMONIAMNIST)  # the real 28x28 npz; then only a short run
    with caplog.at_level(logging.INFO, logger="trainer"):
        quick = ["--limit", "16", "--epochs", "1", "--no-progress", "--output-dir", str(tmp_path / "run")]
        assert main([*argv, *quick]) == 0
    assert "model.stem_stride not set: 1 for 28x28 inputs" in caplog.text
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best.spec.stem_stride == 1 and best.config["model"]["stem_stride"] == 1  # the choice is saved
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model"]["stem_stride"] == 1


def test_a_taken_output_dir_cuda_without_a_gpu_and_ctrl_c_exit_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "metrics.json").write_text("{}")
    code, line = run_cli(["train", *FLAGS, "--output-dir", str(taken)], capsys)
    assert code == 1 and "already holds a run (metrics.json)" in line and "--resume" in line
    import torch

    if not torch.cuda.is_available():
        code, line = run_cli(["train", *FLAGS, "--device", "cuda", "--output-dir", str(tmp_path / "gpu")], capsys)
        assert code == 1 and "CUDA is not available" in line

    def interrupted(config: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("trainer.train.train", interrupted)
    code, line = run_cli(["train", *FLAGS, "--output-dir", str(tmp_path / "ctrl-c")], capsys)
    assert code == 130 and "interrupted" in line


def _binary(train: list[float], val: list[float], test: list[float]) -> LabeledData:
    def split(name: str, labels: list[float]) -> LabeledSplit:
        images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
        return LabeledSplit(name=name, labels=np.asarray(labels, dtype=np.float32)[:, None], images=images)

    splits = {"train": split("train", train), "val": split("val", val), "test": split("test", test)}
    return LabeledData(task=Task.BINARY, label_names=("pneumonia",), splits=splits, description={})


def test_a_one_class_validation_split_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(DataError, match=r"the val split has no negative samples of 'pneumonia' \(3 positive"):
        check_labels(_binary([0, 1, 1], [1, 1, 1], [0, 1]))
    with caplog.at_level(logging.WARNING, logger="trainer"):
        check_labels(_binary([0, 1, 1], [0, 1], [1, 1]))  # a one-class test split: metrics say so, no refusal
    assert "label 'pneumonia' has no negative samples in the test split" in caplog.text
    source = np.load(PNEUMONIAMNIST)
    arrays = {key: source[key][:40] for key in source.files}
    arrays["val_labels"] = np.ones_like(arrays["val_labels"])
    npz = tmp_path / "one_class_val.npz"
    np.savez(npz, **arrays)
    flags = ["--data-kind", "medmnist", "--data-path", str(npz), "--labels", "pneumonia", *QUICK_FLAGS]
    code, line = run_cli(["train", *flags, "--output-dir", str(tmp_path / "run")], capsys)
    assert code == 1 and "val split has no negative samples" in line


def test_a_class_without_samples_is_named(caplog: pytest.LogCaptureFixture) -> None:
    eye = np.eye(3, dtype=np.float32)
    splits = {name: LabeledSplit(name=name, labels=eye[[0, 1, 1]], images=np.zeros((3, 8, 8), np.uint8))
              for name in ("train", "val", "test")}  # fmt: skip
    data = LabeledData(task=Task.MULTICLASS, label_names=("normal", "bacteria", "virus"), splits=splits, description={})
    with caplog.at_level(logging.WARNING, logger="trainer"):
        check_labels(data)
    assert "class 'virus' has no samples in the train split" in caplog.text


def test_csv_patient_column_is_found_or_named_and_leakage_stops_training(tmp_path: Path) -> None:
    covid = DATA / "covid_chestxray_ieee8023_subset"
    table = covid / "metadata_subset.csv"
    data = load_csv(table, path_columns=("filename",), label_column="finding")
    assert data.description["patients"] == "patientid"  # the collection's own column name
    with pytest.raises(DataError, match="has no patient column 'subject'"):
        load_csv(table, path_columns=("filename",), label_column="finding", patient_column="subject")
    # The same patient's images in train and test (an official split column that ignores patients) -> stop.
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    patient = next(r["patientid"] for r in rows if sum(x["patientid"] == r["patientid"] for x in rows) > 1)
    lines = ["path,label,patient_id,split"]
    for i, row in enumerate(r for r in rows if r["patientid"] == patient):
        split = "train" if i == 0 else "test"
        lines.append(f"{(covid / row['filename']).resolve()},{row['pneumonia_binary']},{patient},{split}")
    others = [r for r in rows if r["patientid"] != patient]
    for i, row in enumerate(others[:12]):
        lines.append(f"{(covid / row['filename']).resolve()},{i % 2},p{i},{('train', 'val')[i % 2]}")
    (tmp_path / "leaky.csv").write_text("\n".join(lines) + "\n")
    leaky = load_csv(tmp_path / "leaky.csv", label_column="label", task="binary", labels=("0", "1"))
    assert leaky.description["leakage"]["patients_in_several_splits"] == 1
    with pytest.raises(DataError, match=r"leakage: 1 patients have images in several splits.*--allow-leakage"):
        check_leakage(leaky, allow=False)
    check_leakage(leaky, allow=True)
