"""bench/gpu_proof.sh --dry-run: every step of the GPU proof on the CPU at tiny sizes, so the script cannot rot.

A real run of each piece: bench/train_speed.py, a trainer run on the Kermany set, export to fp32 and fp16 with
parity through the service's loader, the GPU tests (skipping without a GPU), the servers of bench/gpu_serve.py
under load, and the table. About a minute of CPU on 2 cores; the figures are not CUDA's (the table says so)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from data_location import FULL_DATA_DIR, REPO_ROOT

pytestmark = pytest.mark.slow
KERMANY = FULL_DATA_DIR / "kermany_chest_xray_224"


def test_dry_run_runs_every_step_and_prints_the_table(tmp_path: Path) -> None:
    if not (KERMANY / "train").is_dir():
        pytest.fail(f"the Kermany 224-px set is not at {KERMANY}; CI keeps ../shared beside the clone")
    out = tmp_path / "proof"
    env = {**os.environ, "PYTHON": sys.executable, "KERMANY": str(KERMANY)}
    result = subprocess.run(["bash", "bench/gpu_proof.sh", "--dry-run", "--out", str(out)], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    table = (out / "table.txt").read_text()
    assert "DRY RUN on the CPU" in table and "not CUDA figures" in table
    rows = [row for path in sorted(out.glob("*.json")) for row in json.loads(path.read_text())]
    assert not [row for row in rows if str(row.get("value", "")).startswith("FAILED")], table
    sections = [row["section"] for row in rows]
    assert sections.count("training") == 5  # trainer (synthetic), trainer (cache), the run, val, test
    assert sections.count("export") == 2 and sections.count("tests") == 1
    serving = [row["what"] for row in rows if row["section"] == "serving"]
    assert len(serving) == 6 and all("errors" in row["value"] for row in rows if row["section"] == "serving")
    assert all(", 0 errors" in row["value"] for row in rows if row["section"] == "serving"), table
    assert any("nvImageCodec unavailable: decoded on the host" in what for what in serving)
    assert all(row["ok"] for row in rows if row["section"] == "export")  # parity held on the CPU
    assert (out / "models").is_dir() and list((out / "models").glob("*/*/model.fp16.onnx"))
    assert "| section | what | value |" in (out / "table.md").read_text()
