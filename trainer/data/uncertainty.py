"""CheXpert-style label cells (1, 0, -1 = uncertain, blank = not mentioned) and the per-label policy for -1.

MIMIC-CXR-JPG's chexpert/negbio files and CheXpert's own train.csv/valid.csv share this schema.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from trainer.data.manifest import DataError

CHEXPERT_LABELS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
UNCERTAINTY_POLICIES = ("ignore", "zeros", "ones")  # -1 becomes NaN (masked), 0 or 1
BLANK_POLICIES = ("unknown", "zeros")  # a blank cell (not mentioned) becomes NaN or 0
_UNCERTAIN_VALUE = {"ignore": math.nan, "zeros": 0.0, "ones": 1.0}


def parse_uncertainty(spec: str | Mapping[str, str], labels: Sequence[str]) -> dict[str, str]:
    """A policy per label from `"ignore"` or `"ignore,Edema=ones,Atelectasis=ones"` (or a mapping).

    A bare word sets the default for every label; `Label=policy` overrides one label.
    """
    items = dict(spec) if isinstance(spec, Mapping) else _split_spec(spec)
    default = items.pop("default", "ignore")
    policies = dict.fromkeys(labels, default)
    unknown = [name for name in items if name not in policies]
    if unknown:
        raise DataError(f"uncertainty policy names unknown label {unknown[0]!r}; labels are {', '.join(labels)}")
    policies.update(items)
    bad = sorted({p for p in policies.values() if p not in UNCERTAINTY_POLICIES})
    if bad:
        allowed = ", ".join(UNCERTAINTY_POLICIES)
        raise ValueError(f"Invalid uncertainty policy {bad[0]!r}. Only {allowed} are supported.")
    return policies


def _split_spec(spec: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, sep, policy = part.rpartition("=")
        result[name.strip() if sep else "default"] = policy.strip()
    return result


def select_labels(wanted: Sequence[str] | None) -> tuple[str, ...]:
    """The CheXpert labels to train on, in the order given (default: all 14 in canonical order)."""
    if not wanted:
        return CHEXPERT_LABELS
    unknown = [name for name in wanted if name not in CHEXPERT_LABELS]
    if unknown:
        raise DataError(f"label {unknown[0]!r} is not a CheXpert label; choose from {', '.join(CHEXPERT_LABELS)}")
    return tuple(wanted)


def label_row(
    row: Mapping[str, str], labels: Sequence[str], policies: Mapping[str, str], blank: str
) -> list[float] | str:
    """The row's label values under the policies, or a description of its first invalid cell."""
    values = []
    for name in labels:
        value = cell_value(row.get(name, ""), policies[name], blank)
        if value is None:
            return f"{name}={row.get(name)!r}"
        values.append(value)
    return values


def cell_value(cell: str, policy: str, blank: str = "unknown") -> float | None:
    """One cell as a float label (NaN = unknown); None if the cell is not a CheXpert value."""
    text = cell.strip()
    if not text:
        return 0.0 if blank == "zeros" else math.nan
    try:
        number = float(text)
    except ValueError:
        return None
    if number == 1.0:
        return 1.0
    if number == 0.0:
        return 0.0
    if number == -1.0:
        return _UNCERTAIN_VALUE[policy]
    return None


def check_blank(blank: str) -> str:
    if blank not in BLANK_POLICIES:
        raise ValueError(f"Invalid blank-label policy {blank!r}. Only {', '.join(BLANK_POLICIES)} are supported.")
    return blank
