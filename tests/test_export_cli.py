"""`python -m export` in a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from export_support import REPO, make_checkpoint

from export import read_record

pytestmark = pytest.mark.slow


def run_export(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "export", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_cli_exports_a_checkpoint(tmp_path: Path) -> None:
    checkpoint = make_checkpoint(tmp_path / "model.pt")
    out, report = tmp_path / "out" / "model.onnx", tmp_path / "report.json"
    result = run_export(tmp_path / "model.pt", out, "--version", "1.2.3", "--report", report)
    assert result.returncode == 0, result.stderr
    assert "max abs diff" in result.stdout and "tolerance 0.0001" in result.stdout
    assert f"-> {out}" in result.stdout
    assert read_record(out) == checkpoint.record.model_copy(update={"version": "1.2.3"})
    summary = json.loads(report.read_text())
    assert summary["parity"]["max_abs_diff"] <= summary["parity"]["tolerance"] == 1e-4
    assert summary["opset"] == 18 and summary["version"] == "1.2.3"


def test_cli_missing_checkpoint_fails_clearly(tmp_path: Path) -> None:
    result = run_export(tmp_path / "missing.pt", tmp_path / "model.onnx")
    assert result.returncode == 1
    assert f"onnx failed: checkpoint {tmp_path / 'missing.pt'} does not exist" in result.stderr
    assert not (tmp_path / "model.onnx").exists()


def test_cli_names_a_bad_checkpoint_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "best.pt"
    bad.write_bytes(b"not a checkpoint")
    result = run_export("onnx", bad, "--model-dir", tmp_path / "models")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"onnx failed: {bad} is not a usable checkpoint: ")
    assert not (tmp_path / "models").exists()


BLOCK_TORCH = """
import runpy, sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith(("torch.", "torchvision")):
            raise ImportError(f"torch-free run imported {name}")
sys.meta_path.insert(0, NoTorch())
sys.argv = ["export", *sys.argv[1:]]
runpy.run_module("export", run_name="__main__")
"""


def test_evaluate_and_inspect_run_without_torch(tmp_path: Path) -> None:
    """The bundled model scored through the trainer's data layer with torch made unimportable."""
    model = REPO / "models" / "pneumoniamnist-convnext_atto" / "1.0.0" / "model.onnx"
    out = tmp_path / "metrics.json"
    command = [
        sys.executable,
        "-c",
        BLOCK_TORCH,
        "evaluate",
        str(model),
        "--split",
        "val",
        "--limit",
        "64",
        "--out",
        str(out),
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    label = metrics["splits"]["val"]["labels"]["pneumonia"]
    assert label["n"] == 64 and label["auroc"] > 0.9
    low, high = label["ci95"]["auroc"]
    assert low <= label["auroc"] <= high
    inspect = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH, "inspect", str(model)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert inspect.returncode == 0, inspect.stderr
    assert "output heatmaps: tensor(float) ['batch', 1, 3, 3]" in inspect.stdout
    assert "variant fp32" in inspect.stdout
    # The kept epoch counted from 1, as report.md counts it (the record stores it from 0).
    kept = read_record(model).provenance.metrics["epoch"] + 1
    assert f"  best epoch {kept} of 15 (counted from 1, as in report.md" in inspect.stdout


BUNDLED = REPO / "models" / "pneumoniamnist-convnext_atto" / "1.0.0" / "model.onnx"
PNEUMONIAMNIST = REPO.parent / "shared" / "data" / "pneumoniamnist" / "pneumoniamnist_reconstructed_v2_splits.npz"


def test_evaluate_without_out_writes_under_runs_never_beside_the_model(tmp_path: Path) -> None:
    before = sorted(BUNDLED.parent.iterdir())
    command = [sys.executable, "-m", "export", "evaluate", str(BUNDLED), "--split", "val", "--limit", "32"]
    command += ["--data-path", str(PNEUMONIAMNIST)]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    written = tmp_path / "runs" / "evaluate" / "pneumoniamnist-convnext_atto" / "1.0.0" / "model.metrics.json"
    assert json.loads(written.read_text())["splits"]["val"]["labels"]["pneumonia"]["n"] == 32
    assert f"metrics written to {written.relative_to(tmp_path)}" in result.stdout
    assert sorted(BUNDLED.parent.iterdir()) == before


def test_card_notes_are_optional_and_a_missing_notes_file_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "CARD_NOTES.md"
    result = run_export("card", BUNDLED, "--notes", missing, "--out", tmp_path / "card.md")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"card failed: notes file {missing} does not exist (notes are optional: leave out --notes)"
    )
    assert not (tmp_path / "card.md").exists()
    result = run_export("card", BUNDLED, "--out", tmp_path / "card.md")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "card.md").read_text().startswith("#")
