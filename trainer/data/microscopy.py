"""Multi-channel microscopy: a sample is several grayscale files (or the pages of one TIFF) stacked as channels.

Three layouts:
- a CSV manifest with one path column per channel and a class column (`nucleus,microtubules,er,label`);
- per-sample folders, `root/[split/]<class>/<sample>/` holding one file per channel, matched by name
  (`<anything>_<channel>.png` or `<channel>.tif`);
- multi-page TIFFs, `root/[split/]<class>/<sample>.tif`, one page per channel.
The channel order is the order the channels are named in; it is part of the model's recipe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from medcore.record import Task
from trainer.data.imagefolder import class_entries
from trainer.data.labels import names_row
from trainer.data.manifest import DataError, LabeledData
from trainer.data.samples import SampleList, SplitPlan, assemble
from trainer.data.tabular import load_csv
from trainer.data.validation import Screen

TIFF_SUFFIXES = (".tif", ".tiff")


def load_microscopy(
    root: Path,
    *,
    channels: Sequence[str] = (),
    label_column: str = "label",
    labels: Sequence[str] | None = None,
    plan: SplitPlan | None = None,
    screen: Screen | None = None,
) -> LabeledData:
    """`root` is a CSV manifest (its `channels` are path columns) or a folder of per-sample folders / TIFFs."""
    plan, screen = plan or SplitPlan(), screen or Screen()
    if root.is_file():
        if len(channels) < 1:
            raise DataError(f"name the channel path columns of {root.name} (e.g. nucleus,microtubules,er)")
        return load_csv(root, path_columns=tuple(channels), label_column=label_column, task="multiclass",
                        labels=labels, stacked=True, plan=plan, screen=screen, kind="microscopy")  # fmt: skip
    entries = class_entries(root)
    classes = tuple(labels) if labels else tuple(sorted({name for _, name, _ in entries}))
    if len(classes) < 2:
        raise DataError(f"{root} has {len(classes)} class folder(s) {list(classes)}; at least two are needed")
    folders = [e for _, _, e in entries if e.is_dir()]
    if folders and len(folders) != len(entries):
        raise DataError(f"{root} mixes per-sample folders and files; use one layout")
    if folders and not channels:
        raise DataError("per-sample folders need the channel names (e.g. nucleus,microtubules,er) to order the files")
    samples = SampleList(classes, stacked=True)
    bad: dict[str, list[str]] = {}
    for pool, name, entry in entries:
        key = str(entry.relative_to(root))
        row = names_row([name], classes, multilabel=False)
        if isinstance(row, str):
            bad.setdefault(f"lie in a class folder not among the labels {list(classes)}", []).append(key)
            continue
        files = _channel_files(entry, channels) if entry.is_dir() else (entry,)
        if isinstance(files, str):
            bad.setdefault("lack exactly one file per channel", []).append(f"{key} ({files})")
            continue
        samples.add(key, files, row, key, pool)
    for reason, offenders in bad.items():
        screen.reject(reason, offenders, len(entries), unit="samples")
    count = len(channels) if folders else _page_count(samples, screen)
    description = {
        "kind": "microscopy",
        "path": str(root.resolve()),
        "layout": "per-sample folders" if folders else "multi-page TIFF",
        "channels": list(channels) if channels else count,
        "channel_count": count,
        "listing_sha256": hashlib.sha256("\n".join(samples.keys).encode()).hexdigest(),
        "patients": "not given: each sample is its own group",
    }
    return assemble(samples, Task.MULTICLASS, screen, plan, description)


def _channel_files(folder: Path, channels: Sequence[str]) -> tuple[Path, ...] | str:
    """One file per channel, in channel order, or what is wrong."""
    files = [f for f in sorted(folder.iterdir()) if f.is_file() and not f.name.startswith(".")]
    chosen = []
    for channel in channels:
        matches = [f for f in files if f.stem == channel or f.stem.endswith((f"_{channel}", f"-{channel}"))]
        if len(matches) != 1:
            return f"{len(matches)} files for channel {channel!r}"
        chosen.append(matches[0])
    return tuple(chosen)


def _page_count(samples: SampleList, screen: Screen) -> int:
    """Pages per multi-page TIFF; every sample must have the same number (header only)."""
    counts = {}
    for key, files in zip(samples.keys, samples.files, strict=True):
        try:
            with Image.open(files[0]) as image:
                counts[key] = int(getattr(image, "n_frames", 1))
        except OSError:
            counts[key] = 0  # unreadable: assemble's header check names it
    usual = max(set(counts.values()), key=list(counts.values()).count) if counts else 0
    odd = [f"{key} ({n} pages, most have {usual})" for key, n in counts.items() if n not in (usual, 0)]
    screen.reject("have another number of pages (channels)", odd, len(samples), unit="samples")
    return usual
