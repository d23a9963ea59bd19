"""Which received instances run through the model, and why the others do not.

An instance runs when it is an image, is not one of our own results coming back, and passes the intended-use
gate of the model DICOM is routed to (`SERVE_DICOM_MODEL`, else the default model), checked from the header
alone with the same `check_intended_use` as `/predict` (only when `SERVE_INTENDED_USE_GATE` is on, as there).
Anything else is recorded as skipped with a stable reason code and a message that names attributes and the
model's allowed values, never the instance's own free-text values. Idempotency: `sop_instance_uid` is the key
under which the outbox remembers what it did with an instance, so a resent instance is never inferred twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.dataset import Dataset

from medcore.imaging import ImageError, OutsideIntendedUseError, check_intended_use
from medcore.imaging.dicom import attribute
from service.registry import ServedModel

# What our own results say about themselves (sr.py, secondary_capture.py): an instance that carries it came
# from this node (a PACS routing rule that sends everything back to us), and is never run again.
OWN_MANUFACTURER = "medimaging-platform"
# PS3.5 9.1: components of digits without leading zeros, separated by dots, at most 64 characters.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")

SKIP_REASONS = ("not_an_image", "own_result", "outside_intended_use")


class InstanceIdentityError(ImageError):
    """The instance has no usable SOP Instance UID or SOP Class UID, so it cannot be tracked (400)."""

    code = "corrupt_image"


@dataclass(frozen=True)
class Skip:
    """Why an instance is not inferred: a reason from `SKIP_REASONS` and a message free of header values."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Identity:
    """The UIDs an instance is tracked and answered by."""

    sop_class_uid: str
    sop_instance_uid: str


def identify(header: Dataset) -> Identity:
    """The instance's SOP Class and Instance UIDs (from the data set, else its file meta), checked as UIDs."""
    meta = getattr(header, "file_meta", Dataset())
    found = {}
    pairs = (("SOPClassUID", "MediaStorageSOPClassUID"), ("SOPInstanceUID", "MediaStorageSOPInstanceUID"))
    for keyword, fallback in pairs:
        value = str(attribute(header, keyword, "") or meta.get(fallback, "") or "").strip().rstrip("\0")
        if len(value) > 64 or not _UID.match(value):
            raise InstanceIdentityError(f"DICOM attribute {keyword} is missing or not a valid UID")
        found[keyword] = value
    return Identity(found["SOPClassUID"], found["SOPInstanceUID"])


def choose(header: Dataset, served: ServedModel) -> Skip | None:
    """None when the instance runs on `served`; else why it is skipped."""
    if "Rows" not in header:  # the header is read up to the pixel data: an image has its Image Pixel module
        return Skip("not_an_image", "the instance is not an image (it has no Image Pixel module)")
    if str(attribute(header, "Manufacturer", "") or "").strip() == OWN_MANUFACTURER:
        return Skip("own_result", "the instance is a result this node wrote; results are never run again")
    if served.intended_use_gate:
        try:
            check_intended_use(header, served.record.intended_use)
        except OutsideIntendedUseError as exc:
            return Skip("outside_intended_use", str(exc))
    return None
