"""Shared test fixtures: where the real data lives (../shared/data, else the sample in tests/data)."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from ci_skips import ci_enabled, skip_allowed_in_ci, skip_reason
from data_location import DATA, REPO_ROOT

SHARED_DATA = DATA  # ../shared/data beside the clone, else tests/data (same layout and file names)
__all__ = ["REPO_ROOT", "SHARED_DATA"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Under `CI=true`, a skip that does not name a GPU fails (tests/ci_skips.py says why)."""
    outcome = yield
    _fail_skip_under_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    """The same for a whole module skipped at import (`pytest.importorskip`, `allow_module_level`)."""
    outcome = yield
    _fail_skip_under_ci(outcome.get_result())


def _fail_skip_under_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and ci_enabled() and not hasattr(report, "wasxfail"):
        reason = skip_reason(report.longrepr)
        if not skip_allowed_in_ci(reason):
            report.outcome = "failed"
            report.longrepr = f"skipped under CI=true, which needs every tool and engine the tests use: {reason}"
