"""Pieces for the DICOM node tests: a model with an intended use, sample instances with fresh UIDs, a pynetdicom
C-STORE destination that records what it receives, and the service with its SCP on a known port."""

from __future__ import annotations

import io
import shutil
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from data_location import DATA
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from service_support import build_tiny_model, record_for

from service.config import Settings

SAMPLES = DATA / "dicom_samples"
CHEST_JPEG = SAMPLES / "SIIM_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819_CR_chest_MONOCHROME2_jpeg.dcm"
CHEST_J2K = SAMPLES / "RG1_J2KI_CR_chest_PA_MONOCHROME1_j2k.dcm"
CHEST_NO_META = SAMPLES / "CR-MONO1-10-chest_MONOCHROME1_no_meta.dcm"
TIBIA = SAMPLES / "RG3_J2KR_CR_tibia_MONOCHROME1_j2k_lossless.dcm"  # EXTREMITY: outside a chest model's use
CHEST_FILES = (CHEST_JPEG, CHEST_J2K)
MODEL_NAME, MODEL_VERSION = "chest-test", "0.0.1"
INTENDED_USE = {"description": "frontal chest radiographs", "modalities": ["CR", "DX"], "body_parts": ["CHEST"],
                "out_of_scope": ["paediatric patients"]}  # fmt: skip
SCP_AE = "MEDIMAGING"
MODALITY_AE = "MODALITY"
DEST_AE = "DESTINATION"


def require_samples() -> None:
    if not CHEST_JPEG.is_file():
        pytest.fail(f"the DICOM samples are not at {SAMPLES}; CI keeps ../shared beside the clone")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def chest_model(folder: Path, *, heatmaps: bool = False) -> Path:
    """The tiny model with a chest-radiograph intended use, in the model-directory layout."""
    record = record_for(MODEL_NAME, MODEL_VERSION, intended_use=INTENDED_USE)
    path = folder / MODEL_NAME / MODEL_VERSION / "model.onnx"
    if heatmaps:
        from service_support import build_heatmap_model

        build_heatmap_model(path, record)
    else:
        build_tiny_model(path, record)
    return folder


def with_new_uids(source: Path, folder: Path, **attributes: Any) -> Path:
    """A copy of `source` with new Study/Series/SOP Instance UIDs (so each test has its own instances)."""
    dataset = pydicom.dcmread(source, force=True)
    if not hasattr(dataset, "file_meta") or "TransferSyntaxUID" not in dataset.file_meta:
        dataset.file_meta = pydicom.dataset.FileMetaDataset()
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID = (
        generate_uid(), generate_uid(), generate_uid()
    )  # fmt: skip
    dataset.file_meta.MediaStorageSOPInstanceUID = UID(dataset.SOPInstanceUID)
    dataset.file_meta.MediaStorageSOPClassUID = UID(dataset.SOPClassUID)
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


def dicom_settings(models: Path, outbox: Path, destination: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "model_dir": models,
        "host": "127.0.0.1",
        "dicom_port": free_port(),
        "dicom_ae_title": SCP_AE,
        "dicom_allowed_callers": f"{MODALITY_AE}@127.0.0.1,STORESCU@127.0.0.1",
        "dicom_destination": destination,
        "dicom_outbox": outbox,
        "dicom_retry_base_s": 0.2,
        "dicom_retry_cap_s": 0.5,
        "drain_timeout_s": 2.0,
    }
    return Settings(**{**values, **extra})


@dataclass
class Destination:
    """A C-STORE SCP (pynetdicom) that keeps every instance it is sent; `stop()` and `start()` on the same port."""

    port: int = field(default_factory=free_port)
    ae_title: str = DEST_AE
    status: int = 0x0000
    syntaxes: tuple[str, ...] | None = None  # the transfer syntaxes it accepts (None: pynetdicom's defaults)
    received: list[bytes] = field(default_factory=list)
    server: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"dicom://{self.ae_title}@127.0.0.1:{self.port}"

    def start(self) -> Destination:
        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, list(self.syntaxes) if self.syntaxes else None)

        def on_store(event: evt.Event) -> int:
            with self.lock:
                self.received.append(event.encoded_dataset(include_meta=True))
            return self.status

        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def datasets(self) -> list[Dataset]:
        with self.lock:
            return [pydicom.dcmread(io.BytesIO(data)) for data in self.received]

    def uid_counts(self) -> Counter[str]:
        return Counter(str(ds.SOPInstanceUID) for ds in self.datasets())


@contextmanager
def destination() -> Iterator[Destination]:
    dest = Destination().start()
    try:
        yield dest
    finally:
        dest.stop()


def copy_files(files: tuple[Path, ...], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(f, folder / f.name)) for f in files]


def sr_probabilities(sr: Dataset) -> dict[str, float]:
    """{label: probability} from one of our SRs (the exact FloatingPointValue of each Probability NUM)."""
    found = {}
    for group in sr.ContentSequence:
        if group.ValueType != "CONTAINER":
            continue
        label, probability = None, None
        for item in group.ContentSequence:
            concept = item.ConceptNameCodeSequence[0].CodeMeaning
            if concept == "Finding":
                label = item.ConceptCodeSequence[0].CodeMeaning
            elif concept == "Probability":
                probability = float(item.MeasuredValueSequence[0].FloatingPointValue)
        assert label is not None and probability is not None
        found[label] = probability
    return found


def sr_source_uid(sr: Dataset) -> str:
    """The SOP Instance UID of the image one of our SRs is about (its "Source of Measurement" item)."""
    (image,) = [item for item in sr.ContentSequence if item.ValueType == "IMAGE"]
    return str(image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
