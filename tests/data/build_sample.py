"""Rebuild the test sample in tests/data from the full sets in ../shared/data (run from the repository root).

`.venv/bin/python tests/data/build_sample.py` picks the images the tests use, re-encodes the radiographs at
a long side of at most 384 px (DICOM files and the two byte-level format cases stay byte-identical;
COVID images under a NoDerivatives licence are left out), slices the
PneumoniaMNIST npz files and writes the label rows of exactly these files. Deterministic.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
FULL = ROOT.parent / "shared" / "data"
OUT = ROOT / "tests" / "data"
LONG_SIDE = 384
KERMANY, COVID, DICOM, MNIST = (
    "kermany_chest_xray_subset", "covid_chestxray_ieee8023_subset", "dicom_samples", "pneumoniamnist",
)  # fmt: skip
KEEP_BYTES = {"000001-12.jpg", "000001-3.png"}  # PNG behind .jpg, RGBA PNG: the tests are about these bytes
NPZ_SIZES = {
    "pneumoniamnist_reconstructed_v2_splits.npz": {"train": 160, "val": 96, "test": 96},
    "pneumoniamnist_balanced_undersampled.npz": {"train": 128, "val": 64, "test": 64},
}


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _write_rows(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _shrink(source: Path, target: Path, keep: bool) -> tuple[int, int]:
    """Copy `source` to `target`, re-encoded at LONG_SIDE in its own format unless `keep`; returns (w, h)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(source) as image:
        image.load()
        fmt = image.format or "PNG"
        if keep or max(image.size) <= LONG_SIDE:
            shutil.copyfile(source, target)
            return image.size
        scale = LONG_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        small = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"optimize": True}))
    target.write_bytes(buffer.getvalue())
    return small.size


def _measured(row: dict[str, str], path: Path, size: tuple[int, int]) -> dict[str, str]:
    data = path.read_bytes()
    return {**row, "width": str(size[0]), "height": str(size[1]), "bytes": str(len(data)),
            "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip


def kermany() -> None:
    header, rows = _rows(FULL / KERMANY / "labels.csv")
    by_split = lambda split, label: [r for r in rows if r["kermany_split"] == split and r["label"] == label]  # noqa: E731
    chosen = by_split("train", "0")[:12] + by_split("train", "1")[:12]
    chosen += [r for r in rows if r["kermany_split"] == "test"][:3] + [r for r in rows if r["kermany_split"] == "val"]
    for label in ("0", "1"):
        chosen += sorted((r for r in rows if r["label"] == label), key=lambda r: int(r["bytes"]))[:10]
    chosen += sorted(rows, key=lambda r: r["filename"])[:20]
    wanted = {r["filename"] for r in chosen} | {"images/person1000_virus_1681.jpeg", "images/IM-0001-0001.jpeg"}
    kept = []
    for row in rows:  # file order, as in the full set
        if row["filename"] in wanted:
            target = OUT / KERMANY / row["filename"]
            kept.append(_measured(row, target, _shrink(FULL / KERMANY / row["filename"], target, keep=False)))
    _write_rows(OUT / KERMANY / "labels.csv", header, kept)


def covid() -> None:
    header, rows = _rows(FULL / COVID / "metadata_subset.csv")
    rows = [r for r in rows if "ND" not in r["license"]]  # NoDerivatives: neither re-encoded nor copied here
    normals = [r for r in rows if r["finding"] == "No Finding"][:4]
    sick = [r for r in rows if r["finding"] != "No Finding"]
    firsts = {r["finding"]: r for r in reversed(sick)}.values()
    covid19 = [r for r in sick if r["finding"].startswith("COVID-19")][:12]
    bacterial = [r for r in sick if r["finding"] in {"Streptococcus", "Klebsiella", "Legionella", "Bacterial",
                                                      "Mycoplasma Bacterial Pneumonia", "E.Coli"}][:6]  # fmt: skip
    wanted = {r["filename"] for r in [*normals, *firsts, *covid19, *bacterial, *sick[:8]]}
    wanted |= {f"images/{name}" for name in (*KEEP_BYTES, "000001-2.jpg")}
    kept = []
    for row in rows:
        if row["filename"] in wanted:
            keep = Path(row["filename"]).name in KEEP_BYTES
            target = OUT / COVID / row["filename"]
            kept.append(_measured(row, target, _shrink(FULL / COVID / row["filename"], target, keep=keep)))
    _write_rows(OUT / COVID / "metadata_subset.csv", header, kept)


def dicom() -> None:
    (OUT / DICOM).mkdir(parents=True, exist_ok=True)
    for path in sorted((FULL / DICOM).iterdir()):
        if path.suffix in (".dcm", ".csv"):
            shutil.copyfile(path, OUT / DICOM / path.name)


def pneumoniamnist() -> None:
    (OUT / MNIST).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, sizes in NPZ_SIZES.items():
        source = np.load(FULL / MNIST / name)
        arrays = {}
        for split, count in sizes.items():
            index = np.sort(rng.choice(len(source[f"{split}_labels"]), size=count, replace=False))
            arrays[f"{split}_images"] = source[f"{split}_images"][index]
            arrays[f"{split}_labels"] = source[f"{split}_labels"][index]
        np.savez_compressed(OUT / MNIST / name, **arrays)


if __name__ == "__main__":
    for folder in (KERMANY, COVID, DICOM, MNIST):
        shutil.rmtree(OUT / folder, ignore_errors=True)
    kermany()
    covid()
    dicom()
    pneumoniamnist()
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{OUT}: {sum(1 for p in OUT.rglob('*') if p.is_file())} files, {total / 1e6:.1f} MB")
