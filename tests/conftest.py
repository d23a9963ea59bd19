"""Shared test fixtures: where the real data lives (../shared/data, else the sample in tests/data)."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_location import DATA, REPO_ROOT

SHARED_DATA = DATA  # ../shared/data beside the clone, else tests/data (same layout and file names)
__all__ = ["REPO_ROOT", "SHARED_DATA"]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA
