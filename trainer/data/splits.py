"""Patient-level, stratified, seeded splits, and the leakage check every dataset passes through.

A patient's images always land in one split. Patients are stratified by their rarest positive
label (so rare findings reach every split), then dealt, in a seeded random order, to whichever
split is furthest below its share of that stratum's images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from trainer.data.manifest import LabeledSplit
from trainer.data.validation import first_few


def patient_split(
    labels: np.ndarray, patients: Sequence[str], fractions: Mapping[str, float], seed: int
) -> dict[str, np.ndarray]:
    """Sample indices per split name; `fractions` (of samples) must sum to 1. Every patient in one split."""
    if abs(sum(fractions.values()) - 1.0) > 1e-6 or any(f < 0 for f in fractions.values()):
        raise ValueError(f"split fractions must be non-negative and sum to 1, got {dict(fractions)}")
    groups: dict[str, list[int]] = {}
    for index, patient in enumerate(patients):
        groups.setdefault(patient, []).append(index)
    strata = _strata(np.asarray(labels, dtype=np.float32), groups)
    rng = np.random.default_rng(seed)
    names = list(fractions)
    share = np.array([fractions[n] for n in names], dtype=np.float64)
    chosen: dict[str, list[int]] = {n: [] for n in names}
    for stratum in sorted(strata):
        members = strata[stratum]
        order = rng.permutation(len(members))
        total = sum(len(groups[members[i]]) for i in order)
        filled = np.zeros(len(names))
        for i in order:
            indices = groups[members[i]]
            target = int(np.argmax(share * total - filled))
            filled[target] += len(indices)
            chosen[names[target]].extend(indices)
    return {name: np.sort(np.asarray(idx, dtype=np.int64)) for name, idx in chosen.items()}


def _strata(labels: np.ndarray, groups: Mapping[str, list[int]]) -> dict[int, list[str]]:
    """Patients keyed by the column of their rarest positive label (-1: no positive, -2: all unknown)."""
    known = ~np.isnan(labels)
    frequency = np.where(known & (labels >= 0.5), 1, 0).sum(axis=0)
    strata: dict[int, list[str]] = {}
    for patient, indices in groups.items():
        rows = labels[indices]
        positive = np.flatnonzero((np.nan_to_num(rows, nan=0.0) >= 0.5).any(axis=0))
        fallback = -1 if known[indices].any() else -2
        key = int(positive[np.argmin(frequency[positive])]) if len(positive) else fallback
        strata.setdefault(key, []).append(patient)
    return strata


def leakage_report(splits: Mapping[str, LabeledSplit]) -> dict[str, Any]:
    """Patients found in more than one split, and samples found twice across splits (the same file, or for
    in-memory arrays such as MedMNIST, byte-identical images). Counts and file names only, no patient ids."""
    seen_patients: dict[str, str] = {}
    seen_samples: dict[str, str] = {}
    leaked_patients: set[str] = set()
    examples: list[str] = []
    duplicated: list[str] = []
    for name, split in splits.items():
        for i, (identity, shown) in enumerate(_sample_keys(split)):
            if seen_samples.setdefault(identity, name) != name:
                duplicated.append(f"{shown} ({seen_samples[identity]} and {name})")
            if split.patient_ids is None:
                continue
            owner = seen_patients.setdefault(split.patient_ids[i], name)
            if owner != name:
                leaked_patients.add(split.patient_ids[i])
                if len(examples) < 5:
                    examples.append(f"{shown} ({owner} and {name})")
    report: dict[str, Any] = {
        "checked": True,
        "patients_in_several_splits": len(leaked_patients),
        "duplicates_across_splits": len(duplicated),
    }
    if any(s.patient_ids is None for s in splits.values()):
        report["note"] = "some splits carry no patient ids; only the samples themselves were compared"
    if leaked_patients:
        report["examples"] = examples
    if duplicated:
        report["duplicate_examples"] = first_few(duplicated)
    return report


def _sample_keys(split: LabeledSplit) -> list[tuple[str, str]]:
    """(identity, what to show) per sample: the file path(s), or a hash of an in-memory image."""
    files = split.files()
    if files is None:
        assert split.images is not None
        hashes = (hashlib.sha1(image.tobytes()).hexdigest() for image in split.images)
        return [(digest, f"{split.name}[{i}]") for i, digest in enumerate(hashes)]
    return [("+".join(map(str, f)),) * 2 for f in files]
