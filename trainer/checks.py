"""Checks before the first batch: settings and data that cannot give a meaningful run stop here, in one line.

Torch-free. Each failure is a `ValueError` (a `DataError` for the data) whose message names the
value and the fix; warnings name the label and the split.
"""

from __future__ import annotations

import logging

import numpy as np

from medcore.record import Task
from trainer.data.manifest import DataError, LabeledData

logger = logging.getLogger("trainer")

# ConvNeXt: the stem divides the side by its stride, then three 2x2 stride-2 downsamplings follow, each needing
# at least 2 px, so the stem must leave at least 8 px.
CONVNEXT_MIN_AFTER_STEM = 8


# An unset model.stem_stride takes the largest stride that leaves at least this many pixels a side after the stem
# (224 and 128 px: 4, as torchvision; 64 px: 4; 32 px: 2; 28 px: 1, as MedMNIST's small-input networks).
MIN_SIDE_AFTER_STEM = 16
STEM_STRIDES = (4, 2, 1)


def choose_stem_stride(height: int, width: int) -> int:
    """The stem stride for inputs of `height` x `width` when the config leaves it unset."""
    side = min(height, width)
    return next((s for s in STEM_STRIDES if side // s >= MIN_SIDE_AFTER_STEM), STEM_STRIDES[-1])


def check_input_size(arch: str, stem_stride: int, height: int, width: int) -> None:
    """Refuse an input too small for the network, naming a stem stride (or input size) that fits."""
    if not arch.startswith("convnext"):
        return
    side = min(height, width)
    if side // stem_stride >= CONVNEXT_MIN_AFTER_STEM:
        return
    fits = [s for s in (2, 1) if s < stem_stride and side // s >= CONVNEXT_MIN_AFTER_STEM]
    fix = f"use --stem-stride {fits[0]}" if fits else f"use inputs of at least {CONVNEXT_MIN_AFTER_STEM} px"
    need = CONVNEXT_MIN_AFTER_STEM * stem_stride
    raise ValueError(
        f"{height}x{width} inputs are too small for {arch} with model.stem_stride {stem_stride} (it needs at least"
        f" {need} px a side): {fix}, or set preprocessing.height/width to {need} or more"
    )


def check_labels(data: LabeledData) -> None:
    """Refuse a binary train or val split holding one class (val AUROC and the threshold would be meaningless);
    warn, naming them, about labels or classes with no samples in a split."""
    for split_name in data.splits:
        labels = data.split(split_name).labels
        if data.task is Task.MULTICLASS:
            known = labels[~np.isnan(labels).any(axis=1)]
            counts = known.sum(axis=0) if len(known) else np.zeros(len(data.label_names))
            empty = [name for name, count in zip(data.label_names, counts, strict=True) if count == 0]
            if empty:
                logger.warning("class %s has no samples in the %s split", ", ".join(map(repr, empty)), split_name)
            continue
        for j, name in enumerate(data.label_names):
            column = labels[:, j]
            column = column[~np.isnan(column)]
            positives, negatives = int((column == 1).sum()), int((column == 0).sum())
            if positives and negatives:
                continue
            missing = "positive" if not positives else "negative"
            if data.task is Task.BINARY and split_name in ("train", "val"):
                raise DataError(
                    f"the {split_name} split has no {missing} samples of {name!r} ({positives} positive, {negatives}"
                    f" negative): validation AUROC and the decision threshold need both classes; check the data or"
                    f" the split (data.val_fraction, data.split_seed, data.limit)"
                )
            logger.warning("label %r has no %s samples in the %s split", name, missing, split_name)


def check_leakage(data: LabeledData, allow: bool) -> None:
    """Stop when a patient's images sit in two splits, unless `allow` (data.allow_leakage)."""
    leakage = data.description.get("leakage", {})
    patients = int(leakage.get("patients_in_several_splits", 0))
    if not patients:
        return
    if allow:
        logger.warning("leakage: %d patients have images in several splits (data.allow_leakage)", patients)
        return
    raise DataError(
        f"leakage: {patients} patients have images in several splits (see data_report.json); fix the split or"
        f" the patient column (--patient-column), or pass --allow-leakage"
    )
