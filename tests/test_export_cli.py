"""`python -m export` in a real subprocess."""

from __future__ import annotations

import json
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
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
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
    assert f"export failed: checkpoint {tmp_path / 'missing.pt'} does not exist" in result.stderr
    assert not (tmp_path / "model.onnx").exists()
