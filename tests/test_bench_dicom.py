"""bench/dicom.py end to end at its smallest: a real service with its DICOM node, a real Orthanc, storescu and
/predict on the same files; every instance answered and one SR per instance in Orthanc (no timing asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from orthanc_support import require_dcmtk, require_orthanc

ROOT = Path(__file__).resolve().parents[1]


def test_the_dicom_benchmark_runs_both_paths_and_prints_the_ratio() -> None:
    require_orthanc()
    require_dcmtk("storescu")
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "dicom.py"), "--copies", "1", "--rounds", "1", "--concurrency", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = dict(re.findall(r"^(POST /predict -> answer|C-STORE -> SR stored in Orthanc)\s+(\d+ .*)$", result.stdout,
                           flags=re.MULTILINE))  # fmt: skip
    assert set(rows) == {"POST /predict -> answer", "C-STORE -> SR stored in Orthanc"}, result.stdout
    for row in rows.values():
        instances, _seconds, _rate, failed, _service_cpu, _orthanc_cpu = row.split()
        assert (int(instances), int(failed)) == (3, 0), row
    assert re.search(r"^DICOM / predict = \d+\.\d\d \((meets|misses) the goal", result.stdout, flags=re.MULTILINE)
    assert "SRs in Orthanc: 6 for 6 instances sent by C-STORE" in result.stdout  # 3 warm-up + 3: each once
    assert result.stdout.startswith("machine: ")
