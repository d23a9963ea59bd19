"""The registry of data layouts: `data.kind` -> the reader, called with the options that kind uses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from trainer.config import DataConfig
from trainer.data.chexpert import load_chexpert
from trainer.data.imagefolder import load_imagefolder
from trainer.data.kermany import load_kermany
from trainer.data.manifest import LabeledData
from trainer.data.medmnist import load_medmnist
from trainer.data.microscopy import load_microscopy
from trainer.data.mimic import load_mimic
from trainer.data.nih import load_nih
from trainer.data.samples import SplitPlan
from trainer.data.tabular import load_csv
from trainer.data.validation import Screen

Reader = Callable[[DataConfig, Screen], LabeledData]


def _plan(c: DataConfig) -> SplitPlan:
    return SplitPlan(val_fraction=c.val_fraction, test_fraction=c.test_fraction, seed=c.split_seed)


def _nih(c: DataConfig, screen: Screen) -> LabeledData:
    labels_file = Path(c.labels_file) if c.labels_file else None
    return load_nih(Path(c.path), labels_file=labels_file, views=c.views or (), plan=_plan(c), screen=screen)


def _mimic(c: DataConfig, screen: Screen) -> LabeledData:
    return load_mimic(Path(c.path), labeler=c.labeler, labels=c.labels, uncertainty=c.uncertainty, blank=c.blank,
                      views=c.views or (), plan=_plan(c), screen=screen)  # fmt: skip


def _chexpert(c: DataConfig, screen: Screen) -> LabeledData:
    return load_chexpert(Path(c.path), labels=c.labels, uncertainty=c.uncertainty, blank=c.blank,
                         views=c.views or (), plan=_plan(c), screen=screen)  # fmt: skip


def _csv(c: DataConfig, screen: Screen) -> LabeledData:
    return load_csv(Path(c.path), path_columns=(c.path_column,), label_column=c.label_column,
                    label_columns=c.label_columns or (), task=c.task, labels=c.labels, separator=c.separator,
                    uncertainty=c.uncertainty, plan=_plan(c), screen=screen,
                    patient_column=c.patient_column)  # fmt: skip


def _microscopy(c: DataConfig, screen: Screen) -> LabeledData:
    return load_microscopy(Path(c.path), channels=c.channels or (), label_column=c.label_column, labels=c.labels,
                           plan=_plan(c), screen=screen)  # fmt: skip


READERS: dict[str, Reader] = {
    "medmnist": lambda c, screen: load_medmnist(Path(c.path), c.labels),
    "kermany": lambda c, screen: load_kermany(
        Path(c.path), subtypes=c.subtypes, screen=screen, val_fraction=c.val_fraction, seed=c.split_seed
    ),
    "nih": _nih,
    "mimic": _mimic,
    "chexpert": _chexpert,
    "csv": _csv,
    "imagefolder": lambda c, screen: load_imagefolder(Path(c.path), labels=c.labels, plan=_plan(c), screen=screen),
    "microscopy": _microscopy,
}
