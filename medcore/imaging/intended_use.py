"""The optional intended-use gate: a DICOM's Modality, BodyPartExamined and ViewPosition against the record.

Non-DICOM inputs carry no such tags and pass. A restricted attribute that is absent fails: the gate
cannot confirm the use. Messages name the attribute and the allowed values (from the model record);
the file's own value is quoted only when it is a standard enumerated code (CR, DX, CHEST, PA, ...),
never free text, which could be patient data. Nothing here logs.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from medcore.imaging.budget import DEFAULT_MAX_DECODE_BYTES
from medcore.imaging.dicom import attribute, looks_like_dicom, read_dicom
from medcore.imaging.errors import OutsideIntendedUseError
from medcore.record import IntendedUse

# Standard DICOM codes that are safe to echo back (PS3.3 C.7.3.1.1.1, C.8.11.5.1.1, PS3.16 CID 4031).
_MODALITIES = {"CR", "DX", "DR", "MG", "IO", "PX", "CT", "MR", "US", "NM", "PT", "XA", "RF", "OT", "SC", "RG", "DG"}
_VIEW_POSITIONS = {"AP", "PA", "LL", "RL", "RLD", "LLD", "RLO", "LLO", "LPO", "RPO", "LAO", "RAO", "LAT", "LATERAL"}
_BODY_PARTS = {
    "CHEST", "ABDOMEN", "HEAD", "SKULL", "NECK", "CSPINE", "TSPINE", "LSPINE", "SPINE", "PELVIS", "HIP", "KNEE",
    "EXTREMITY", "ARM", "LEG", "HAND", "FOOT", "SHOULDER", "ELBOW", "WRIST", "ANKLE", "BREAST", "HEART", "THORAX",
}  # fmt: skip
_GATES = (
    ("Modality", "modalities", _MODALITIES),
    ("BodyPartExamined", "body_parts", _BODY_PARTS),
    ("ViewPosition", "view_positions", _VIEW_POSITIONS),
)


def is_restricted(intended_use: IntendedUse | None) -> bool:
    """True when the record restricts at least one of the DICOM attributes."""
    return intended_use is not None and any(getattr(intended_use, field) is not None for _, field, _ in _GATES)


def check_intended_use(
    data_or_dataset: bytes | Dataset, intended_use: IntendedUse | None, *, max_bytes: int = DEFAULT_MAX_DECODE_BYTES
) -> None:
    """Raise `OutsideIntendedUseError` (422 `outside_intended_use`) when a DICOM falls outside the use.

    Bytes that are not DICOM pass; DICOM bytes are read header-only (pixels are not decoded).
    """
    if not is_restricted(intended_use):
        return
    assert intended_use is not None
    if isinstance(data_or_dataset, Dataset):
        dataset = data_or_dataset
    elif looks_like_dicom(data_or_dataset):
        dataset = read_dicom(data_or_dataset, max_bytes=max_bytes, stop_before_pixels=True)
    else:
        return
    for keyword, field, codes in _GATES:
        allowed = getattr(intended_use, field)
        if allowed is None:
            continue
        value = str(attribute(dataset, keyword, "") or "").strip().upper()
        if value in {a.strip().upper() for a in allowed}:
            continue
        choices = ", ".join(allowed)
        if not value:
            raise OutsideIntendedUseError(f"DICOM attribute {keyword} is absent; the model is for {choices}")
        shown = f" {value}" if value in codes else ""
        raise OutsideIntendedUseError(f"DICOM attribute {keyword}{shown} is outside the model's use ({choices})")
