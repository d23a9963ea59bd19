"""A reproducible set of images that are not chest radiographs, built only from what is on this machine.

    .venv/bin/python bench/non_chest_images.py OUT_DIR    # writes OUT_DIR/*.png|*.jpg|*.dcm and OUT_DIR/index.csv

Kinds (index.csv names each file's kind and source; nothing is downloaded):
- photograph: the sample photographs shipped with matplotlib and scikit-learn, whole and as crops;
- screenshot: application windows, dialogs and charts rendered with PIL and matplotlib;
- document: text pages, forms and tables rendered with PIL, some made to look scanned (grey, noisy, skewed);
- other modality / body part: matplotlib's MRI slice and every pydicom test file (and tests/data DICOM) whose
  Modality is not CR/DX or whose BodyPartExamined is not CHEST, as the DICOM files themselves;
- other: terrain maps (matplotlib's elevation data), handwritten digits (scikit-learn), random textures.
Every random choice is seeded, so the set is the same on every run with the same installed packages.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

REPO = Path(__file__).resolve().parents[1]
SEED = 0
_VOCABULARY = (
    "patient report summary result normal value range table page invoice total date signature review policy "
    "section appendix method sample figure reference account number contact address please note the of and to "
    "in for with on is are this that be by from at as was it an or"
)
WORDS = tuple(_VOCABULARY.split(" "))
Entry = tuple[str, str, bytes, str]  # file name, kind, file bytes, source


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def photographs() -> Iterator[Entry]:
    """matplotlib's and scikit-learn's sample photographs: whole, four quadrants and the centre."""
    import matplotlib
    import sklearn

    sources = [
        Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
        Path(matplotlib.get_data_path()) / "sample_data" / "Minduka_Present_Blue_Pack.png",
        Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
        Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg",
    ]
    for path in sources:
        if not path.is_file():
            continue
        image = Image.open(path).convert("RGB")
        w, h = image.size
        crops = {
            "whole": (0, 0, w, h),
            "top-left": (0, 0, w // 2, h // 2),
            "top-right": (w // 2, 0, w, h // 2),
            "bottom-left": (0, h // 2, w // 2, h),
            "bottom-right": (w // 2, h // 2, w, h),
            "centre": (w // 4, h // 4, 3 * w // 4, 3 * h // 4),
        }
        for name, box in crops.items():
            crop = image.crop(box)
            yield f"photo_{path.stem}_{name}.jpg", "photograph", _jpeg(crop), f"{path.parent.parent.name}/{path.name}"
            if name == "whole":
                gray = crop.convert("L")
                yield f"photo_{path.stem}_gray.png", "photograph", _png(gray), f"{path.name} (grayscale)"


def screenshots(rng: np.random.Generator) -> Iterator[Entry]:
    """Windows with title bars, buttons, menus and text (PIL), and charts (matplotlib)."""
    for i in range(8):
        w, h = int(rng.integers(640, 1280)), int(rng.integers(400, 900))
        image = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(225, 256, 3)))
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 0, w, 32), fill=tuple(int(v) for v in rng.integers(20, 120, 3)))
        draw.text((12, 8), f"Workstation - window {i}", fill="white", font=_font(16))
        for row in range(int(rng.integers(4, 10))):
            y = 60 + row * 48
            draw.rectangle((20, y, 20 + int(rng.integers(80, 200)), y + 30), outline="gray", fill="#e0e0e0")
            draw.text((28, y + 7), " ".join(rng.choice(WORDS, 2)), fill="black", font=_font(14))
            draw.text((240, y + 7), " ".join(rng.choice(WORDS, 6)), fill="black", font=_font(14))
        yield f"screenshot_window_{i}.png", "screenshot", _png(image), "rendered with PIL"
    yield from _charts(rng)


def _charts(rng: np.random.Generator) -> Iterator[Entry]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for i in range(6):
        figure, axes = plt.subplots(figsize=(6.4, 4.8), dpi=100)
        x = np.arange(30)
        if i % 3 == 0:
            axes.plot(x, np.cumsum(rng.normal(size=30)), label="series A")
            axes.plot(x, np.cumsum(rng.normal(size=30)), label="series B")
            axes.legend()
        elif i % 3 == 1:
            axes.bar(range(8), rng.uniform(1, 10, 8), color="tab:orange")
        else:
            axes.scatter(rng.normal(size=200), rng.normal(size=200), s=8)
        axes.set_title(f"Dashboard chart {i}")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        plt.close(figure)
        yield f"screenshot_chart_{i}.png", "screenshot", buffer.getvalue(), "rendered with matplotlib"


def documents(rng: np.random.Generator) -> Iterator[Entry]:
    """Text pages, forms and tables; half of them degraded like a scan (grey paper, noise, blur, skew)."""
    for i in range(12):
        w, h = 850, 1100
        page = Image.new("L", (w, h), 255)
        draw = ImageDraw.Draw(page)
        draw.text((60, 50), f"Document {i}: {' '.join(rng.choice(WORDS, 3)).title()}", fill=0, font=_font(28))
        y = 110
        if i % 3 == 2:  # a table
            for _ in range(18):
                for col in range(4):
                    x = 60 + col * 180
                    draw.rectangle((x, y, x + 180, y + 36), outline=0)
                    draw.text((x + 8, y + 10), " ".join(rng.choice(WORDS, 2)), fill=0, font=_font(14))
                y += 36
        else:
            paragraph = " ".join(rng.choice(WORDS, 900))
            for line in textwrap.wrap(paragraph, 80)[:40]:
                draw.text((60, y), line, fill=0, font=_font(16))
                y += 24
            if i % 3 == 1:  # a form: boxes to fill in
                for k in range(5):
                    draw.rectangle((60, 1000 - k * 20 - 40, 400, 1000 - k * 20 - 25), outline=0)
        scanned = i % 2 == 1
        if scanned:
            page = page.rotate(float(rng.uniform(-3, 3)), fillcolor=235, expand=False)
            pixels = np.asarray(page, dtype=np.float64) * 0.85 + 20 + rng.normal(0, 12, (h, w))
            page = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))
        data = _jpeg(page) if scanned else _png(page)
        suffix = "scan.jpg" if scanned else "page.png"
        yield f"document_{i}_{suffix}", "document", data, "rendered with PIL" + (", scan-like" if scanned else "")


def other_images(rng: np.random.Generator) -> Iterator[Entry]:
    """matplotlib's MRI slice and terrain data, scikit-learn's handwritten digits, random textures."""
    import matplotlib
    import matplotlib.cm

    sample = Path(matplotlib.get_data_path()) / "sample_data"
    mri = sample / "s1045.ima.gz"
    if mri.is_file():
        with gzip.open(mri) as handle:
            slice16 = np.frombuffer(handle.read(), np.uint16).reshape(256, 256)
        scaled = (slice16 / max(1, slice16.max()) * 255).astype(np.uint8)
        yield "mri_brain_slice.png", "other modality", _png(Image.fromarray(scaled)), "matplotlib s1045.ima.gz"
    for name, key in (("jacksboro_fault_dem.npz", "elevation"), ("topobathy.npz", "topo")):
        path = sample / name
        if not path.is_file():
            continue
        with np.load(path) as data:
            values = np.asarray(data[key], dtype=np.float64)
        norm = (values - values.min()) / max(1e-9, np.ptp(values))
        gray = Image.fromarray((norm * 255).astype(np.uint8))
        coloured = Image.fromarray((matplotlib.colormaps["terrain"](norm)[..., :3] * 255).astype(np.uint8))
        yield f"terrain_{path.stem}_gray.png", "other", _png(gray), f"matplotlib {name}"
        yield f"terrain_{path.stem}_colour.png", "other", _png(coloured), f"matplotlib {name}"
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(10):
        row = int(np.flatnonzero(digits.target == i)[0])
        image = Image.fromarray((digits.images[row] / 16 * 255).astype(np.uint8)).resize((128, 128), Image.NEAREST)
        yield f"digit_{i}.png", "other", _png(image), "scikit-learn load_digits"
    for i in range(8):
        size = 256
        if i % 4 == 0:
            pixels = rng.integers(0, 256, (size, size), dtype=np.uint8)
        elif i % 4 == 1:
            pixels = (np.indices((size, size)).sum(axis=0) // 32 % 2 * 255).astype(np.uint8)
        elif i % 4 == 2:
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        else:
            pixels = np.tile(np.linspace(0, 255, size, dtype=np.uint8), (size, 1))
        yield f"texture_{i}.png", "other", _png(Image.fromarray(pixels)), "numpy random texture (seeded)"


def dicoms() -> Iterator[Entry]:
    """pydicom's test files and tests/data DICOMs that are not CR/DX chest, as files (distinct pixels, decodable)."""
    import pydicom
    import pydicom.data

    from medcore.imaging import ImageError, decode_image

    # The files pydicom ships (its test_files folder), never get_testdata_files: that one downloads the rest.
    paths = sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))
    paths += sorted((REPO / "tests/data/dicom_samples").glob("*.dcm"))
    seen: set[str] = set()
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                header = pydicom.dcmread(path, stop_before_pixels=True)
                data = path.read_bytes()
                image = decode_image(data)
        except (ImageError, Exception):  # many test files are deliberately broken or need absent codecs
            continue
        modality = str(header.get("Modality", "") or "").upper()
        body_part = str(header.get("BodyPartExamined", "") or "").upper()
        if modality in ("CR", "DX") and (body_part == "CHEST" or "CHEST" in path.name.upper()):
            continue
        digest = hashlib.sha256(np.asarray(image).tobytes()).hexdigest()
        if digest in seen or min(np.asarray(image).shape[:2]) < 8:
            continue
        seen.add(digest)
        kind = "other modality" if modality not in ("CR", "DX") else "other body part"
        yield f"dicom_{modality or 'none'}_{path.stem}.dcm", kind, data, f"{path.parent.name}/{path.name}"


def build(out_dir: Path) -> list[tuple[str, str, str]]:
    """Write the set to `out_dir` (with index.csv); returns (file name, kind, source) rows."""
    rng = np.random.default_rng(SEED)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, kind, data, source in (
        *photographs(),
        *screenshots(rng),
        *documents(rng),
        *other_images(rng),
        *dicoms(),
    ):
        (out_dir / name).write_bytes(data)
        rows.append((name, kind, source))
    with (out_dir / "index.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("file", "kind", "source"))
        writer.writerows(rows)
    return rows


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    rows = build(Path(argv[0]))
    kinds: dict[str, int] = {}
    for _, kind, _ in rows:
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"{len(rows)} images in {argv[0]}: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main(sys.argv[1:]))
