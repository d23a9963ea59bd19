"""Under CI=true a skip fails unless it names a GPU: run a small suite in a child pytest and read its outcome."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ci_skips import ci_enabled, skip_allowed_in_ci, skip_reason

TESTS = Path(__file__).resolve().parent

SUITE = """
import pytest

def test_tool_missing():
    pytest.skip("kubectl is not installed")

@pytest.mark.skipif(True, reason="no Docker engine answers")
def test_engine_missing():
    pass

def test_gpu_missing():
    pytest.skip("needs a CUDA GPU")

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    raise AssertionError

def test_passes():
    pass
"""


def run_suite(tmp_path: Path, ci: str | None) -> str:
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    (tmp_path / "test_suite.py").write_text(SUITE)
    (tmp_path / "test_module_skipped.py").write_text('import pytest\npytest.importorskip("no_such_module_here")\n')
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{TESTS}:{TESTS.parent}"}
    if ci is not None:
        env["CI"] = ci
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rA",
            "-p",
            "no:cacheprovider",
            "--continue-on-collection-errors",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    return result.stdout


def test_under_ci_a_missing_tool_or_engine_fails_and_a_gpu_skip_stays(tmp_path: Path) -> None:
    out = run_suite(tmp_path, "true")
    assert "FAILED test_suite.py::test_tool_missing" in out, out
    assert "ERROR test_suite.py::test_engine_missing" in out, out  # a skipif mark skips in setup: an error
    assert "ERROR test_module_skipped.py" in out, out
    assert "skipped under CI=true" in out and "kubectl is not installed" in out
    assert "SKIPPED [1] test_suite.py" in out and "needs a CUDA GPU" in out, out
    assert "XFAIL test_suite.py::test_expected_failure" in out, out
    assert "1 failed, 1 passed, 1 skipped, 1 xfailed, 2 errors" in out, out


def test_without_ci_skips_stay_skips(tmp_path: Path) -> None:
    out = run_suite(tmp_path, None)
    assert "1 passed, 4 skipped, 1 xfailed" in out, out


@pytest.mark.parametrize(
    ("reason", "allowed"),
    [("needs a CUDA GPU", True), ("no GPU here", True), ("CUDA is available here", True), ("curl missing", False)],
)
def test_only_gpu_reasons_may_skip_in_ci(reason: str, allowed: bool) -> None:
    assert skip_allowed_in_ci(reason) is allowed


def test_ci_values() -> None:
    assert ci_enabled({"CI": "true"}) and ci_enabled({"CI": "1"}) and not ci_enabled({}) and not ci_enabled({"CI": "0"})
    assert skip_reason(("f.py", 3, "Skipped: x")) == "Skipped: x"
