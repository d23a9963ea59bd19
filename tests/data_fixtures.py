"""Small fixtures in each public layout, built from the real images and real labels in ../shared/data.

Images are symlinked (never copied or altered) unless a layout needs new pixels (microscopy
channel stacks are cropped from real radiographs). Labels are the images' real labels: Kermany's
NORMAL / PNEUMONIA (viral), the COVID collection's findings and views. Where a test needs a value
the real data cannot give (an uncertain -1, an unknown name, a missing file), the test sets it
itself and says so.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

KERMANY = "kermany_chest_xray_subset"
COVID = "covid_chestxray_ieee8023_subset"


@dataclass(frozen=True)
class RealImage:
    source: Path  # the real file
    finding: str  # "No Finding", "Pneumonia" (Kermany viral), or the COVID collection's finding
    patient: str
    view: str  # "AP" for Kermany (paediatric AP films); the COVID collection's view otherwise
    split: str  # Kermany's own split; "" for the COVID collection

    @property
    def pneumonia(self) -> bool:
        return self.finding != "No Finding"


def kermany_images(shared: Path, per_class: int = 8, test: int = 3, val: int = 2) -> list[RealImage]:
    """`per_class` train images of each class plus Kermany's own test/val normals (all its test/val are normal)."""
    rows = list(csv.DictReader((shared / KERMANY / "labels.csv").open()))
    chosen = (
        [r for r in rows if r["kermany_split"] == "train" and r["label"] == "0"][:per_class]
        + [r for r in rows if r["kermany_split"] == "train" and r["label"] == "1"][:per_class]
        + [r for r in rows if r["kermany_split"] == "test"][:test]
        + [r for r in rows if r["kermany_split"] == "val"][:val]
    )
    return [
        RealImage(
            source=shared / KERMANY / r["filename"],
            finding="Pneumonia" if r["label"] == "1" else "No Finding",
            patient=_kermany_patient(Path(r["filename"]).stem),
            view="AP",
            split=r["kermany_split"],
        )
        for r in chosen
    ]


def covid_images(shared: Path, count: int = 18) -> list[RealImage]:
    """Four "No Finding" images, then the first image of each finding (13 of them), then more in file order.

    Several of its patients have two or more images, which the patient-level splits must keep together.
    """
    rows = list(csv.DictReader((shared / COVID / "metadata_subset.csv").open()))
    normals = [r for r in rows if r["finding"] == "No Finding"][:4]
    sick = [r for r in rows if r["finding"] != "No Finding"]
    firsts: list[dict[str, str]] = []
    for row in sick:
        if row["finding"] not in {r["finding"] for r in firsts}:
            firsts.append(row)
    others = (firsts + [r for r in sick if r not in firsts])[: count - len(normals)]
    return [
        RealImage(shared / COVID / r["filename"], r["finding"], f"covid-{r['patientid']}", r["view"], "")
        for r in normals + others
    ]


def _kermany_patient(stem: str) -> str:
    for prefix in ("NORMAL2-IM-", "IM-"):
        if stem.startswith(prefix):
            return prefix + stem[len(prefix) :].split("-")[0]
    return stem.split("_")[0]


def link(target: Path, link_path: Path) -> Path:
    link_path.parent.mkdir(parents=True, exist_ok=True)
    link_path.symlink_to(target.resolve())
    return link_path


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]], gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# --- NIH ChestX-ray14 -------------------------------------------------------------------------------------------

NIH_HEADER = (
    "Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender", "View Position",
    "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]",
)  # fmt: skip


def build_nih(root: Path, images: Sequence[RealImage], *, nested: bool = True, sample: bool = False) -> Path:
    """`Data_Entry_2017.csv` + official lists (or the sample release's `sample_labels.csv`), NIH file names.

    Kermany images map to "Pneumonia" / "No Finding"; every COVID-collection finding is a
    pneumonia, so it maps to "Pneumonia". Kermany's own test images form `test_list.txt`,
    as do two COVID patients with a pneumonia image.
    """
    patient_numbers = {p: i + 1 for i, p in enumerate(dict.fromkeys(im.patient for im in images))}
    # Two COVID-collection patients with a pneumonia image, so the test split holds both classes.
    covid_test = [p for p in dict.fromkeys(im.patient for im in images if not im.split and im.pneumonia)][:2]
    rows, train_val, test = [], [], []
    follow_up: dict[str, int] = {}
    for i, image in enumerate(images):
        number = patient_numbers[image.patient]
        follow_up[image.patient] = follow_up.get(image.patient, -1) + 1
        name = f"{number:08d}_{follow_up[image.patient]:03d}.png"
        folder = root / (f"images_{1 + i % 2:03d}/images" if nested else "images")
        link(image.source, folder / name)
        finding = "Pneumonia" if image.pneumonia else "No Finding"
        view = "AP" if image.view.startswith("AP") else image.view
        rows.append((name, finding, follow_up[image.patient], number, 5, "M", view, 1024, 1024, 0.14, 0.14))
        (test if image.split == "test" or image.patient in covid_test else train_val).append(name)
    if sample:
        write_csv(root / "sample_labels.csv", NIH_HEADER, rows)
    else:
        write_csv(root / "Data_Entry_2017.csv", NIH_HEADER, rows)
        (root / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
        (root / "test_list.txt").write_text("\n".join(test) + "\n")
    return root


# --- MIMIC-CXR-JPG and CheXpert ----------------------------------------------------------------------------------

CHEXPERT_FILE_ORDER = (  # the order of columns in mimic-cxr-2.0.0-chexpert.csv.gz (alphabetical)
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion",
    "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
)  # fmt: skip


def chexpert_cells(image: RealImage) -> list[str]:
    """The labeler's output for a study: Pneumonia 1 or No Finding 1, every other finding not mentioned (blank)."""
    positive = "Pneumonia" if image.pneumonia else "No Finding"
    return ["1.0" if name == positive else "" for name in CHEXPERT_FILE_ORDER]


def build_mimic(root: Path, images: Sequence[RealImage], *, uncertain_first: bool = False) -> Path:
    """`files/p1X/pXXXXXXXX/sYYYYYYYY/<dicom_id>.jpg` + chexpert, negbio, split and metadata `.csv.gz`.

    One study per image; split: Kermany's own (val -> validate), COVID patients by patient.
    `uncertain_first` turns the first pneumonia study's Pneumonia cell into -1 (set by the test,
    not a real label) to exercise the uncertainty policy.
    """
    subjects = {p: 10000001 + i for i, p in enumerate(dict.fromkeys(im.patient for im in images))}
    covid_patients = list(dict.fromkeys(im.patient for im in images if not im.split))
    labels, splits, metadata = [], [], []
    uncertain_done = False
    for i, image in enumerate(images):
        subject, study, dicom_id = str(subjects[image.patient]), str(50000001 + i), f"{i:08x}-dicom-{i:04d}"
        link(image.source, root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom_id}.jpg")
        cells = chexpert_cells(image)
        if uncertain_first and image.pneumonia and not uncertain_done:
            cells[CHEXPERT_FILE_ORDER.index("Pneumonia")] = "-1.0"
            uncertain_done = True
        labels.append((subject, study, *cells))
        if image.split:
            split = {"val": "validate"}.get(image.split, image.split)
        else:
            position = covid_patients.index(image.patient) % 4
            split = ("train", "train", "validate", "test")[position]
        splits.append((dicom_id, study, subject, split))
        view = "AP" if image.view.startswith("AP") else image.view
        metadata.append((dicom_id, subject, study, f"CHEST ({view})", view, 1024, 1024))
    header = ("subject_id", "study_id", *CHEXPERT_FILE_ORDER)
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", header, labels, gz=True)
    write_csv(root / "mimic-cxr-2.0.0-negbio.csv.gz", header, labels, gz=True)
    write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", ("dicom_id", "study_id", "subject_id", "split"), splits, gz=True)
    meta_header = ("dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
                   "Columns")  # fmt: skip
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", meta_header, metadata, gz=True)
    return root


def build_chexpert(root: Path, images: Sequence[RealImage]) -> Path:
    """`CheXpert-v1.0-small/{train,valid}/patientNNNNN/studyN/viewN_frontal.jpg` + `train.csv` / `valid.csv`.

    Kermany val images and one COVID patient form `valid.csv`; the rest `train.csv`.
    """
    header = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_FILE_ORDER)
    patients = {p: i + 1 for i, p in enumerate(dict.fromkeys(im.patient for im in images))}
    valid_covid = next(im.patient for im in images if not im.split)
    tables: dict[str, list[tuple[object, ...]]] = {"train": [], "valid": []}
    studies: dict[str, int] = {}
    for image in images:
        folder = "valid" if image.split == "val" or image.patient == valid_covid else "train"
        studies[image.patient] = studies.get(image.patient, 0) + 1
        relative = f"{folder}/patient{patients[image.patient]:05d}/study{studies[image.patient]}/view1_frontal.jpg"
        link(image.source, root / relative)
        view = "AP" if image.view.startswith("AP") else image.view
        tables[folder].append((f"CheXpert-v1.0-small/{relative}", "Male", 5, "Frontal", view, *chexpert_cells(image)))
    write_csv(root / "train.csv", header, tables["train"])
    write_csv(root / "valid.csv", header, tables["valid"])
    return root


# --- Kermany folders and ImageFolder ------------------------------------------------------------------------------


def build_kermany(root: Path, images: Sequence[RealImage]) -> Path:
    """`{train,val,test}/{NORMAL,PNEUMONIA}/<Kermany file name>` with Kermany's own splits.

    The subset's val and test images are all normal, so those PNEUMONIA folders stay empty.
    """
    for split in ("train", "val", "test"):
        for folder in ("NORMAL", "PNEUMONIA"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
    for image in images:
        if image.split:
            folder = "PNEUMONIA" if image.pneumonia else "NORMAL"
            link(image.source, root / image.split / folder / image.source.name)
    return root


# --- Multi-channel microscopy ----------------------------------------------------------------------------------

CHANNELS = ("nucleus", "microtubules", "er")


def microscopy_stacks(shared: Path, per_class: int = 4, side: int = 96) -> dict[str, list[list[Image.Image]]]:
    """Per class, `per_class` samples of three real grayscale crops (one per channel), all side x side.

    There is no real microscopy in ../shared/data, so each "channel" is a centre crop of a
    different real radiograph of the class (Kermany normal / viral, COVID-collection COVID-19):
    real pixels and real class membership, in the microscopy layout.
    """
    groups = {
        "normal": [im for im in kermany_images(shared, per_class=3 * per_class) if not im.pneumonia],
        "viral": [im for im in kermany_images(shared, per_class=3 * per_class) if im.pneumonia],
        "covid": [im for im in covid_images(shared, count=112) if im.finding.startswith("COVID-19")],
    }
    stacks: dict[str, list[list[Image.Image]]] = {}
    for name, members in groups.items():
        crops = [_centre_crop(im.source, side) for im in members[: 3 * per_class]]
        stacks[name] = [crops[3 * i : 3 * i + 3] for i in range(per_class)]
    return stacks


def _centre_crop(path: Path, side: int) -> Image.Image:
    with Image.open(path) as image:
        gray = image.convert("L")
    left, top = (gray.width - side) // 2, (gray.height - side) // 2
    # A fresh image: the JPEG's own metadata (JFIF density, EXIF) has no place in a TIFF page.
    return Image.fromarray(np.asarray(gray.crop((left, top, left + side, top + side))))


def build_microscopy(root: Path, stacks: dict[str, list[list[Image.Image]]], layout: str) -> Path:
    """`layout`: "folders" (`<class>/<sample>/<sample>_<channel>.png`), "tiff" (`<class>/<sample>.tif`,
    one page per channel) or "csv" (`manifest.csv` with one path column per channel). Returns the path to load."""
    rows = []
    for name, samples in stacks.items():
        for i, originals in enumerate(samples):
            channels = [image.copy() for image in originals]  # Pillow keeps a saved image's encoder settings
            sample = f"{name}-{i:02d}"
            if layout == "tiff":
                path = root / name / f"{sample}.tif"
                path.parent.mkdir(parents=True, exist_ok=True)
                channels[0].save(path, format="TIFF", save_all=True, append_images=channels[1:])
                continue
            folder = root / name / sample if layout == "folders" else root / "images"
            folder.mkdir(parents=True, exist_ok=True)
            for channel, image in zip(CHANNELS, channels, strict=True):
                image.save(folder / f"{sample}_{channel}.png")
            rows.append((*(f"images/{sample}_{c}.png" for c in CHANNELS), name, f"plate-{i}"))  # plate: sample index
    if layout == "csv":
        return write_csv(root / "manifest.csv", (*CHANNELS, "label", "patient_id"), rows)
    return root
