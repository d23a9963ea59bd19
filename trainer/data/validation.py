"""Bad data fails loudly with counts and the first offenders; skipping is opt-in and reported.

Every reader passes its rows through a `Screen`: a missing file, an unreadable image, an unknown
label or a row outside the label file is either an error (the default) or, with `skip_bad`, a
line in the skip report. Nothing is dropped without a trace.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from medcore.imaging.decode import READABLE_FORMATS
from medcore.imaging.dicom import looks_like_dicom
from trainer.data.manifest import DataError

SHOWN = 5  # offenders named in an error message
REPORTED = 20  # offenders named per reason in a skip report


def first_few(items: Sequence[str], shown: int = SHOWN) -> str:
    """`a, b, c (and 7 more)`."""
    head = ", ".join(str(i) for i in items[:shown])
    return head + (f" (and {len(items) - shown} more)" if len(items) > shown else "")


@dataclass(frozen=True)
class Skipped:
    item: str
    reason: str


@dataclass
class Screen:
    """Collects rejected samples; raises on the first kind of problem unless `skip_bad`.

    `verify_images` reads each image header at load time (describe turns it off: it only
    checks that files exist).
    """

    skip_bad: bool = False
    verify_images: bool = True
    skipped: list[Skipped] = field(default_factory=list)

    def reject(self, reason: str, offenders: Sequence[str], total: int, unit: str = "rows") -> None:
        """`offenders` of `total` `unit` have problem `reason` (e.g. "name files that do not exist")."""
        if not offenders:
            return
        if not self.skip_bad:
            raise DataError(
                f"{len(offenders)} of {total} {unit} {reason}: {first_few(offenders)}. "
                "Fix them, or set data.skip_bad (--skip-bad) to skip them with a report."
            )
        self.skipped.extend(Skipped(item, reason) for item in offenders)

    def report(self) -> dict[str, Any]:
        """Counts per reason and the first offenders of each, for the run's description."""
        by_reason: dict[str, list[str]] = {}
        for entry in self.skipped:
            by_reason.setdefault(entry.reason, []).append(entry.item)
        return {
            "skipped": len(self.skipped),
            "reasons": {
                reason: {"count": len(items), "first": items[:REPORTED]} for reason, items in by_reason.items()
            },
        }


def missing_files(files: Sequence[tuple[Path, ...]]) -> list[int]:
    """Indices of samples with at least one file that does not exist (stat only, threaded for network disks)."""
    flat = [path for paths in files for path in paths]
    exists = dict(zip(flat, _map(os.path.isfile, flat), strict=True))
    return [i for i, paths in enumerate(files) if not all(exists[p] for p in paths)]


def unreadable_files(files: Sequence[tuple[Path, ...]]) -> dict[int, str]:
    """Samples whose files are not images in a readable format, with the reason. Headers only."""
    flat = [path for paths in files for path in paths]
    problems = dict(zip(flat, _map(header_problem, flat), strict=True))
    result = {}
    for index, paths in enumerate(files):
        found = [f"{p.name}: {problems[p]}" for p in paths if problems[p]]
        if found:
            result[index] = "; ".join(found)
    return result


def header_problem(path: Path) -> str | None:
    """Why `path` is not a readable image (None if its header is fine). Pixels are not decoded."""
    try:
        with path.open("rb") as handle:
            head = handle.read(132)
            if len(head) == 0:
                return "the file is empty"
            if looks_like_dicom(head):
                return None
            handle.seek(0)
            with Image.open(handle) as image:
                found = image.format
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"not a readable image ({type(exc).__name__})"
    if found not in READABLE_FORMATS:
        return f"format {found} is not one of {', '.join(READABLE_FORMATS)}"
    return None


def _map(function: Any, items: Iterable[Any]) -> list[Any]:
    items = list(items)
    if len(items) < 64:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 1) * 4)) as pool:
        return list(pool.map(function, items, chunksize=256))
