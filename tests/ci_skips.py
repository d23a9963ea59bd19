"""Under CI a skip is a failure: a missing tool, engine or data set must not let the suite pass untested.

`CI=true` (or `1`, `yes`) turns every skip into a failed test that names the reason, except a skip whose reason
names a GPU (`GPU`, `CUDA`): CI runs on machines without one. Locally skips stay skips, with their reason (`-ra`).
"""

from __future__ import annotations

import os
import re

GPU_REASON = re.compile(r"\b(gpu|cuda)\b", re.IGNORECASE)


def ci_enabled(environ: dict[str, str] | None = None) -> bool:
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() in {"1", "true", "yes"}


def skip_allowed_in_ci(reason: str) -> bool:
    """Whether a skip with this reason may stay a skip under CI: only one for want of a GPU."""
    return bool(GPU_REASON.search(reason))


def skip_reason(longrepr: object) -> str:
    """The reason of a skipped report's `longrepr` (a (file, line, reason) tuple, or text)."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)
