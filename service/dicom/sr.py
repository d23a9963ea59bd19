"""The result of one inferred instance as a DICOM Comprehensive SR, in the source's study.

Why Comprehensive SR and not the TID 1500 Measurement Report: TID 1500 is built for measurements on image
regions (measurement groups with tracking identifiers, an image library, ROI references), and a whole-image
classification has none of those; squeezing it in adds mandatory structure that no viewer uses for it.
Comprehensive SR carries exactly what the model says, with standard value types (NUM for numbers, CODE for
decisions, TEXT for statements, IMAGE for the source reference), is rendered as a tree by every SR-capable
viewer and is checked end to end by dcmtk's `dsrdump`. The content tree:

    CONTAINER  (99MEDIMG, AIRESULT, "Image classification result")            root, SEPARATE
      HAS CONCEPT MOD  CODE Language of Content Item and Descendants = English
      HAS OBS CONTEXT  CODE Observer Type = Device; TEXT Device Observer Name = the model name
      CONTAINS  TEXT Algorithm Name, TEXT Algorithm Version, TEXT Model record SHA-256, TEXT Model variant
      CONTAINS  IMAGE Source image -> the received SOP instance
      CONTAINS  CONTAINER Finding (one per label, in the record's label order)
                  CONTAINS  CODE Finding = the label (99MEDIMG code: the label itself)
                  CONTAINS  NUM Probability (no units; FloatingPointValue holds the exact float)
                  CONTAINS  NUM Decision threshold (absent for multiclass, which decides by argmax)
                  CONTAINS  CODE Model decision = Yes / No (SNOMED CT 373066001 / 373067005)
                              INFERRED FROM  IMAGE the source image
      CONTAINS  CODE Outside training distribution = Yes / No, NUM Out-of-distribution score,
                TEXT Out-of-distribution warning (when flagged)     (the model's check, `service.ood`; when it has one)
      CONTAINS  TEXT Intended use; TEXT Out of scope (one per entry the record lists)
      CONTAINS  TEXT Disclaimer: not a certified medical device

The document is a new instance in a new series of the source study. Its UIDs are derived from the source
SOP Instance UID and the model's record hash (name-based UUIDs, `result_uid`), so building
the result of the same instance with the same model twice gives the same UIDs: a destination that receives
it again stores it once. From the source, only the Patient and General Study modules are copied (PS3.3
C.7.1.1, C.7.2.1), which the SR's IOD requires to file it in that study; nothing else of the source is kept.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from medcore.decision import LabelDecision
from medcore.record import ModelRecord, Task
from service.dicom.choosing import OWN_MANUFACTURER

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
SCHEME = "99MEDIMG"  # our private coding scheme (PS3.16 8.2: designators starting with 99 are local)
UID_NAMESPACE = uuid.UUID("6f1c2b0e-5d3a-4e8f-9a71-0c4d2e6b8f15")  # ours: result UIDs are uuid5 names in it
SERIES_NUMBER = 9100  # results series sort after the acquisition's own
DISCLAIMER = (
    "Not a certified medical device. This result was produced by a machine-learning model for research and "
    "workflow support; it is not a diagnosis and must be reviewed by a qualified clinician."
)
# PS3.3 C.7.1.1 Patient module and C.7.2.1 General Study module: what is copied from the source.
PATIENT_MODULE = (
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "PatientBirthDate",
    "PatientBirthTime", "PatientSex", "OtherPatientIDsSequence", "PatientComments", "PatientIdentityRemoved",
    "DeidentificationMethod", "DeidentificationMethodCodeSequence",
)  # fmt: skip
STUDY_MODULE = (
    "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber",
    "IssuerOfAccessionNumberSequence", "StudyDescription",
)  # fmt: skip
# Type 2 attributes of those modules: present (empty when the source lacks them).
TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")  # fmt: skip


@dataclass(frozen=True)
class Code:
    value: str
    scheme: str
    meaning: str

    def item(self) -> Dataset:
        ds = Dataset()
        ds.CodeValue, ds.CodingSchemeDesignator, ds.CodeMeaning = self.value, self.scheme, self.meaning[:64]
        return ds


YES = Code("373066001", "SCT", "Yes")
NO = Code("373067005", "SCT", "No")
NO_UNITS = Code("1", "UCUM", "no units")
TITLE = Code("AIRESULT", SCHEME, "Image classification result")
LANGUAGE = Code("121049", "DCM", "Language of Content Item and Descendants")
ENGLISH = Code("eng", "RFC5646", "English")
OBSERVER_TYPE = Code("121005", "DCM", "Observer Type")
DEVICE = Code("121007", "DCM", "Device")
DEVICE_NAME = Code("121013", "DCM", "Device Observer Name")
ALGORITHM_NAME = Code("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = Code("111003", "DCM", "Algorithm Version")
RECORD_HASH = Code("RECORDHASH", SCHEME, "Model record SHA-256")
VARIANT = Code("VARIANT", SCHEME, "Model variant")
SOURCE_IMAGE = Code("121112", "DCM", "Source of Measurement")
FINDING_GROUP = Code("FINDING", SCHEME, "Finding")
FINDING = Code("121071", "DCM", "Finding")
PROBABILITY = Code("PROB", SCHEME, "Probability")
THRESHOLD = Code("THRESHOLD", SCHEME, "Decision threshold")
DECISION = Code("DECISION", SCHEME, "Model decision")
OUT_OF_DISTRIBUTION = Code("OOD", SCHEME, "Outside training distribution")
OOD_SCORE = Code("OODSCORE", SCHEME, "Out-of-distribution score")
OOD_WARNING = Code("OODWARNING", SCHEME, "Out-of-distribution warning")
INTENDED_USE = Code("INTENDEDUSE", SCHEME, "Intended use")
OUT_OF_SCOPE = Code("OUTOFSCOPE", SCHEME, "Out of scope")
DISCLAIMER_CODE = Code("DISCLAIMER", SCHEME, "Disclaimer")


def record_hash(record: ModelRecord) -> str:
    """SHA-256 of the record's JSON as the model file embeds it: names exactly which model spoke."""
    return hashlib.sha256(record.to_json().encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Outcome:
    """What the model said about one instance (the out-of-distribution pair only when the model gives one)."""

    decisions: Sequence[LabelDecision]
    ood_score: float | None = None
    out_of_distribution: bool | None = None
    ood_warning: str | None = None  # the plain-words warning of `service.ood` for a flagged image


def result_uid(source_uid: str, record: ModelRecord, kind: str) -> str:
    """A UID derived from the source instance, the model and the kind of result ("sr", "sc", "series-sr")."""
    name = "\n".join([source_uid, record.name, record.version, record_hash(record), kind])
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, name).int}"  # PS3.5 B.2: a UUID-derived UID (name-based, v5)


def copy_patient_and_study(source: Dataset, target: Dataset) -> None:
    """The Patient and General Study modules of `source` into `target`, and nothing else of it."""
    for keyword in PATIENT_MODULE + STUDY_MODULE:
        if keyword in source:
            target[keyword] = source[keyword]
        elif keyword in TYPE_2:
            setattr(target, keyword, "")
    if "SpecificCharacterSet" in source:
        target.SpecificCharacterSet = source.SpecificCharacterSet  # how the copied names are encoded


def base_instance(source: Dataset, sop_class: str, sop_instance: str, series: str, now: datetime) -> Dataset:
    """A new instance of `sop_class` in the source's study: file meta, SOP Common, patient, study, equipment."""
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = UID(sop_class), UID(sop_instance)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_instance
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    copy_patient_and_study(source, ds)
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series, SERIES_NUMBER, 1
    ds.Manufacturer = OWN_MANUFACTURER
    return ds


def build_sr(source: Dataset, record: ModelRecord, outcome: Outcome, *, variant: str, now: datetime) -> Dataset:
    """The Comprehensive SR for one inferred instance (`source` is its header; pixels are not needed)."""
    source_uid, source_class = str(source.SOPInstanceUID), str(source.SOPClassUID)
    ds = base_instance(
        source, COMPREHENSIVE_SR, result_uid(source_uid, record, "sr"), result_uid(
            str(source.get("SeriesInstanceUID", source_uid)), record, "series-sr"
        ), now,
    )  # fmt: skip
    ds.Modality = "SR"
    ds.SeriesDescription = f"AI result: {record.name} {record.version}"[:64]
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    ds.ManufacturerModelName, ds.SoftwareVersions = record.name[:64], record.version[:64]
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.CompletionFlag, ds.VerificationFlag = "COMPLETE", "UNVERIFIED"
    ds.PerformedProcedureCodeSequence = DicomSequence()
    ds.CurrentRequestedProcedureEvidenceSequence = DicomSequence([_evidence(source)])
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = DicomSequence([TITLE.item()])
    image = _image("CONTAINS", SOURCE_IMAGE, source_class, source_uid)
    items = [
        _code("HAS CONCEPT MOD", LANGUAGE, ENGLISH),
        _code("HAS OBS CONTEXT", OBSERVER_TYPE, DEVICE),
        _text("HAS OBS CONTEXT", DEVICE_NAME, record.name),
        _text("CONTAINS", ALGORITHM_NAME, record.name),
        _text("CONTAINS", ALGORITHM_VERSION, record.version),
        _text("CONTAINS", RECORD_HASH, record_hash(record)),
        _text("CONTAINS", VARIANT, variant),
        image,
        *(_finding(d, record, source_class, source_uid) for d in outcome.decisions),
    ]
    if outcome.out_of_distribution is not None:
        items.append(_code("CONTAINS", OUT_OF_DISTRIBUTION, YES if outcome.out_of_distribution else NO))
    if outcome.ood_score is not None:
        items.append(_num("CONTAINS", OOD_SCORE, outcome.ood_score))
    if outcome.ood_warning:
        items.append(_text("CONTAINS", OOD_WARNING, outcome.ood_warning))
    use = record.intended_use
    if use.description:
        items.append(_text("CONTAINS", INTENDED_USE, use.description))
    items.extend(_text("CONTAINS", OUT_OF_SCOPE, entry) for entry in use.out_of_scope)
    items.append(_text("CONTAINS", DISCLAIMER_CODE, DISCLAIMER))
    ds.ContentSequence = DicomSequence(items)
    return ds


def _finding(decision: LabelDecision, record: ModelRecord, source_class: str, source_uid: str) -> Dataset:
    children = [
        _code("CONTAINS", FINDING, label_code(decision.label)),
        _num("CONTAINS", PROBABILITY, decision.probability),
    ]
    if record.task is not Task.MULTICLASS:
        children.append(_num("CONTAINS", THRESHOLD, decision.threshold))
    verdict = _code("CONTAINS", DECISION, YES if decision.positive else NO)
    verdict.ContentSequence = DicomSequence([_image("INFERRED FROM", SOURCE_IMAGE, source_class, source_uid)])
    children.append(verdict)
    group = _item("CONTAINS", "CONTAINER", FINDING_GROUP)
    group.ContinuityOfContent = "SEPARATE"
    group.ContentSequence = DicomSequence(children)
    return group


def label_code(label: str) -> Code:
    """The label as a code of our scheme: itself when it fits the 16-character code value, else a digest."""
    value = label if len(label) <= 16 else "L" + hashlib.sha256(label.encode()).hexdigest()[:15]
    return Code(value, SCHEME, label)


def _evidence(source: Dataset) -> Dataset:
    instance = Dataset()
    instance.ReferencedSOPClassUID, instance.ReferencedSOPInstanceUID = source.SOPClassUID, source.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = source.get("SeriesInstanceUID", "")
    series.ReferencedSOPSequence = DicomSequence([instance])
    study = Dataset()
    study.StudyInstanceUID = source.get("StudyInstanceUID", "")
    study.ReferencedSeriesSequence = DicomSequence([series])
    return study


def _item(relationship: str, value_type: str, concept: Code) -> Dataset:
    ds = Dataset()
    ds.RelationshipType, ds.ValueType = relationship, value_type
    ds.ConceptNameCodeSequence = DicomSequence([concept.item()])
    return ds


def _text(relationship: str, concept: Code, value: str) -> Dataset:
    ds = _item(relationship, "TEXT", concept)
    ds.TextValue = value
    return ds


def _code(relationship: str, concept: Code, value: Code) -> Dataset:
    ds = _item(relationship, "CODE", concept)
    ds.ConceptCodeSequence = DicomSequence([value.item()])
    return ds


def _num(relationship: str, concept: Code, value: float) -> Dataset:
    measured = Dataset()
    measured.NumericValue = _decimal_string(value)
    measured.FloatingPointValue = float(value)  # exact: the DS above holds at most 16 characters
    measured.MeasurementUnitsCodeSequence = DicomSequence([NO_UNITS.item()])
    ds = _item(relationship, "NUM", concept)
    ds.MeasuredValueSequence = DicomSequence([measured])
    return ds


def _image(relationship: str, concept: Code, sop_class: str, sop_instance: str) -> Dataset:
    reference = Dataset()
    reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID = sop_class, sop_instance
    ds = _item(relationship, "IMAGE", concept)
    ds.ReferencedSOPSequence = DicomSequence([reference])
    return ds


def _decimal_string(value: float) -> str:
    """The value in at most 16 characters (the DS limit), as precisely as they allow."""
    for digits in range(12, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.1e}"
