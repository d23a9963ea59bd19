"""The model record: everything a consumer needs to use a model correctly.

The trainer writes it into every checkpoint, export embeds it in the ONNX metadata and
the service reads it from there. Nobody re-types labels, input sizes or normalisation.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

RECORD_SCHEMA_VERSION = 1
MAX_CHANNELS = 16
ONNX_METADATA_KEY = "medimaging.model_record"
# The ONNX contract between export and every consumer: input [batch, C, H, W] float32,
# output [batch, L] probabilities with the task's activation applied in-graph.
ONNX_INPUT_NAME = "input"
ONNX_OUTPUT_NAME = "probabilities"
ONNX_BATCH_AXIS = "batch"
# Optional second output: class-activation maps [batch, L, h, w] whose spatial mean is each label's logit.
ONNX_HEATMAP_OUTPUT_NAME = "heatmaps"
# Optional output: a feature-space out-of-distribution score [batch], described by the record's `ood`.
ONNX_OOD_OUTPUT_NAME = "ood_score"
# Model directory layout read by the service: MODELS/<name>/<version>/<file>, one file per variant.
VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


class RecordError(ValueError):
    """A model record is missing, of an unknown version, or malformed."""


class Task(StrEnum):
    """How outputs are read: one sigmoid, a softmax over labels, or a sigmoid per label."""

    BINARY = "binary"
    MULTICLASS = "multiclass"
    MULTILABEL = "multilabel"


class Interpolation(StrEnum):
    NEAREST = "nearest"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    LANCZOS = "lanczos"
    BOX = "box"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Preprocessing(_Strict):
    """The intensity and resize recipe applied to every decoded image.

    Order: convert to `channels` (grayscale uses ITU-R 601 luma; 16-bit images are
    min-max scaled to 8 bits), centre square crop (if `crop == "center_square"`),
    resize to `height` x `width`, scale to [0, 1], then `(x - mean) / std` per channel.
    Without `channel_names`, 1 is grayscale and 3 is RGB. With them (microscopy), the input
    stacks that many grayscale channels, one file each in this order, or one multi-page TIFF;
    any count other than 1 or 3 is always stacked.
    """

    height: int = Field(gt=0, le=4096)
    width: int = Field(gt=0, le=4096)
    channels: int = Field(ge=1, le=MAX_CHANNELS)
    channel_names: tuple[str, ...] | None = None
    crop: Literal["center_square", "none"] = "center_square"
    # Bilinear matched MedMNIST's own 28x28 images best (r 0.992 against their full-resolution originals).
    interpolation: Interpolation = Interpolation.BILINEAR
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @model_validator(mode="after")
    def _stats_match_channels(self) -> Preprocessing:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != self.channels:
                raise ValueError(f"{name} has {len(values)} values, channels is {self.channels}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {list(self.std)}")
        if self.channel_names is not None and len(self.channel_names) != self.channels:
            raise ValueError(f"channel_names has {len(self.channel_names)} names, channels is {self.channels}")
        return self

    @model_serializer(mode="wrap")
    def _omit_absent_channel_names(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Grayscale and RGB records stay exactly as before, so readers that predate the field accept them.
        data: dict[str, Any] = handler(self)
        if self.channel_names is None:
            data.pop("channel_names", None)
        return data


Variant = Literal["fp32", "fp16", "int8"]


# A DICOM code string (VR CS, PS3.5 6.2): upper-case letters, digits, space and underscore, 16 at most.
_DICOM_CODE = re.compile(r"[A-Z0-9 _]{1,16}")


class IntendedUse(_Strict):
    """What the model is for, and the DICOM attributes an input must have to be inside that use.

    A `None` tuple means "not restricted". Values are DICOM code strings (stored upper-case) and compare
    case-insensitively with the tags Modality (0008,0060), BodyPartExamined (0018,0015) and ViewPosition
    (0018,5101). The rule for a restricted attribute that a DICOM lacks (absent or empty): the input is
    refused like one outside the use, since the gate cannot confirm it; an unrestricted attribute is never
    read. Images that are not DICOM carry no tags and are not gated (the out-of-distribution score is what
    speaks for them).
    """

    description: str = ""
    modalities: tuple[str, ...] | None = None
    body_parts: tuple[str, ...] | None = None
    view_positions: tuple[str, ...] | None = None
    out_of_scope: tuple[str, ...] = ()

    @field_validator("modalities", "body_parts", "view_positions", mode="before")
    @classmethod
    def _dicom_codes(cls, value: Any, info: ValidationInfo) -> Any:
        """`"CR,DX"`, `["cr", "dx"]` -> `("CR", "DX")`; an empty list would refuse every DICOM, so it is an error."""
        if value is None:
            return None
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ValueError(f"must be a list of DICOM codes or null, got {value!r}")
        codes = tuple(code.strip().upper() for item in items for code in str(item).split(",") if code.strip())
        if not codes:
            raise ValueError(f"{info.field_name} is empty, which would refuse every DICOM; use null for not restricted")
        bad = [code for code in codes if not _DICOM_CODE.fullmatch(code)]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a DICOM code string (A-Z, 0-9, space, underscore; 16 at most)")
        return codes


class OodSpec(_Strict):
    """How to read the graph's out-of-distribution score: an image whose score exceeds `threshold` is flagged.

    The score is computed in the ONNX graph from statistics fitted on `fitted_on` (the training split);
    `threshold` keeps `kept_fraction` of the `threshold_split` images (validation) unflagged.
    """

    output: Literal["ood_score"] = "ood_score"
    method: Literal["mahalanobis"] = "mahalanobis"
    threshold: float = Field(gt=0, allow_inf_nan=False)
    fitted_on: str = Field(min_length=1)
    threshold_split: str = Field(min_length=1)
    kept_fraction: float = Field(gt=0, le=1)
    # How the statistics were fitted: samples, feature size, shrinkage, the feature tensor's role.
    fit: dict[str, Any] = Field(default_factory=dict)

    def flags(self, score: float) -> bool:
        """Whether an image with this score is outside the training distribution (NaN counts as outside)."""
        return not score <= self.threshold


class Provenance(_Strict):
    """Where the model came from: data, code, configuration and measured metrics."""

    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    architecture: str
    data: dict[str, Any] = Field(default_factory=dict)
    code_commit: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    software: dict[str, str] = Field(default_factory=dict)


class ModelRecord(_Strict):
    """Typed, versioned description of one trained model."""

    schema_version: int = RECORD_SCHEMA_VERSION
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    task: Task
    labels: tuple[str, ...] = Field(min_length=1)
    thresholds: dict[str, float]
    preprocessing: Preprocessing
    provenance: Provenance
    intended_use: IntendedUse = Field(default_factory=IntendedUse)
    # Which numeric variant this file is, and how it compared with the fp32 reference when made
    # (e.g. {"max_abs_diff": 3e-4, "decision_agreement": 1.0, "images": 64, "tolerance": 1e-2}).
    variant: Variant = "fp32"
    parity: dict[str, Any] = Field(default_factory=dict)
    # The graph's out-of-distribution output and its threshold; None for a model without one.
    ood: OodSpec | None = None

    @model_serializer(mode="wrap")
    def _omit_absent_ood(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Records without the score stay exactly as before, so readers that predate the field accept them.
        data: dict[str, Any] = handler(self)
        if self.ood is None:
            data.pop("ood", None)
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ModelRecord:
        if self.schema_version != RECORD_SCHEMA_VERSION:
            raise ValueError(
                f"schema_version {self.schema_version} is unknown; this code reads version {RECORD_SCHEMA_VERSION}"
            )
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be unique, got {list(self.labels)}")
        if self.task is Task.BINARY and len(self.labels) != 1:
            raise ValueError(f"a binary task has exactly one (positive) label, got {list(self.labels)}")
        if self.task is Task.MULTICLASS and len(self.labels) < 2:
            raise ValueError(f"a multiclass task needs at least two labels, got {list(self.labels)}")
        if set(self.thresholds) != set(self.labels):
            raise ValueError(
                f"thresholds must name exactly the labels {list(self.labels)}, got {sorted(self.thresholds)}"
            )
        bad = {k: v for k, v in self.thresholds.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"thresholds must lie in [0, 1], got {bad}")
        return self

    @property
    def num_outputs(self) -> int:
        return len(self.labels)

    def to_json(self) -> str:
        return self.model_dump_json(indent=None)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Any) -> ModelRecord:
        if not isinstance(data, dict):
            raise RecordError(f"model record must be a JSON object, got {type(data).__name__}")
        version = data.get("schema_version")
        if version is None:
            raise RecordError("model record field 'schema_version' is missing")
        if version != RECORD_SCHEMA_VERSION:
            raise RecordError(
                f"model record field 'schema_version' is {version!r}; this code reads version {RECORD_SCHEMA_VERSION}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise RecordError(_describe(exc)) from None

    @classmethod
    def from_json(cls, text: str | bytes | None) -> ModelRecord:
        if text is None or (isinstance(text, str | bytes) and not text.strip()):
            raise RecordError("model record is missing")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError(f"model record is not valid JSON: {exc}") from None
        return cls.from_dict(data)


def _describe(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(record)"
        problems.append(f"field '{where}': {err['msg']}")
    return "model record is malformed: " + "; ".join(problems)
