"""Label files as the datasets ship them: CSV (optionally gzipped) and plain file lists. csv module only."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Sequence
from pathlib import Path

from trainer.data.manifest import DataError


def read_table(path: Path, required: Sequence[str] = ()) -> list[dict[str, str]]:
    """Rows of a CSV (`.csv` or `.csv.gz`) as dicts of stripped strings; `required` columns must exist."""
    if not path.is_file():
        raise DataError(f"label file {path} does not exist")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in required if c not in columns]
            if missing:
                found = ", ".join(repr(c) for c in columns[:20]) or "none"
                raise DataError(
                    f"{path.name} lacks column{'s' if len(missing) > 1 else ''} "
                    f"{', '.join(repr(c) for c in missing)}; its columns are {found}"
                )
            rows = [
                {key.strip(): (value or "").strip() for key, value in row.items() if key is not None} for row in reader
            ]
    except (OSError, UnicodeDecodeError, csv.Error, EOFError) as exc:
        raise DataError(f"cannot read label file {path}: {exc}") from None
    if not rows:
        raise DataError(f"label file {path} holds no rows")
    return rows


def read_list(path: Path) -> list[str]:
    """Non-empty lines of a text file list (e.g. NIH's `train_val_list.txt`)."""
    if not path.is_file():
        raise DataError(f"list file {path} does not exist")
    with open(path, encoding="utf-8-sig") as handle:
        names = [line.strip() for line in handle if line.strip()]
    if not names:
        raise DataError(f"list file {path} is empty")
    return names


def find_file(root: Path, names: Sequence[str], what: str) -> Path:
    """The first of `names` that exists under `root` (each name may also be given gzipped or not)."""
    tried = []
    for name in names:
        plain = name.removesuffix(".gz")
        for candidate in dict.fromkeys((name, plain, plain + ".gz")):
            tried.append(candidate)
            if (root / candidate).is_file():
                return root / candidate
    raise DataError(f"no {what} under {root}; looked for {', '.join(dict.fromkeys(tried))}")
