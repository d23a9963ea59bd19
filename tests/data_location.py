"""Where the tests' real images live: ../shared/data beside the clone (CI), else the small sample in tests/data.

Both hold the same layout and file names (tests/data/SOURCE.md lists the sample), so a test written
against one runs on the other. Tests that need the full sets (exact split sizes, every file of a
collection, the bundled model's whole test split) use `needs_full_data` and skip on the sample.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
FULL_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
SAMPLE_DATA_DIR = REPO_ROOT / "tests" / "data"
FULL_DATA = FULL_DATA_DIR.is_dir()
DATA = FULL_DATA_DIR if FULL_DATA else SAMPLE_DATA_DIR

needs_full_data = pytest.mark.skipif(
    not FULL_DATA,
    reason=f"needs the full data sets in ../shared/data ({FULL_DATA_DIR} is absent); tests/data holds only a sample",
)
