"""Response bodies: pydantic models, so /docs shows integration engineers the exact shapes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from medcore.record import Task


class ErrorBody(BaseModel):
    """Every error: a stable machine-readable `code`, a human `detail` and the request's id (`X-Request-ID`)."""

    code: str = Field(examples=["not_an_image"])
    detail: str = Field(examples=["not an image in a readable format (PNG, JPEG, TIFF, BMP)"])
    request_id: str | None = Field(default=None, examples=["3f2b8c1e9a7d4e5f8a6b0c1d2e3f4a5b"])


class ModelSummary(BaseModel):
    """Which model answered: name, version, task, the numeric variant and the onnxruntime provider."""

    name: str = Field(examples=["pneumoniamnist-convnext_atto"])
    version: str = Field(examples=["1.0.0"])
    task: Task
    variant: str = Field(examples=["fp32"])
    provider: str = Field(examples=["CPUExecutionProvider"])


class LabelPrediction(BaseModel):
    label: str
    probability: float = Field(ge=0, le=1)
    threshold: float | None = Field(
        ge=0, le=1, description="from the model record; null for multiclass, where the decision is the argmax"
    )
    positive: bool = Field(description="the decision: probability reached the threshold (multiclass: argmax)")


class Timings(BaseModel):
    """Milliseconds spent in each stage for this image, measured on the server."""

    preprocess: float = Field(description="decode and preprocess the image (with any wait for a decode thread)")
    queue: float = Field(description="wait for the batch to start")
    inference: float = Field(description="the onnxruntime call for the whole batch")
    total: float = Field(description="from the handler receiving the request to this image's answer")


class HeatmapOverlay(BaseModel):
    label: str
    png: str = Field(
        description="base64 RGBA PNG, width x height: the colour-mapped map over the region the model "
        "saw (its centre crop), transparent elsewhere"
    )


class Explanation(BaseModel):
    width: int = Field(ge=1)
    height: int = Field(ge=1)
    image_png: str = Field(description="base64 PNG of the decoded 8-bit image, long side scaled to <= 512")
    heatmaps: list[HeatmapOverlay] = Field(description="one per label, in the record's order")


class ImageResult(BaseModel):
    """One image's answer."""

    index: int = Field(ge=0, description="position of the image in the request")
    predictions: list[LabelPrediction] = Field(description="one entry per label, in the record's order")
    batch_size: int = Field(ge=1, description="images in the onnxruntime call that served this one")
    timings_ms: Timings
    ood_score: float | None = Field(
        description="the model's out-of-distribution score (a Mahalanobis distance of its features to the "
        "training images'); null for a model without that output"
    )
    out_of_distribution: bool | None = Field(
        description="true when ood_score is above the model record's threshold (set at export to keep 95% of "
        "validation images): the image looks unlike the training images and the result is not reliable; "
        "null when the model has no out-of-distribution check"
    )
    warning: str | None = Field(default=None, description="plain-words warning, present on flagged images")
    explanation: Explanation | None = Field(default=None, description="only with ?explain=true")


class ErrorDetail(BaseModel):
    code: str = Field(examples=["not_an_image"])
    detail: str


class ImageFailure(BaseModel):
    """One image that failed alone (the others in the request are still answered)."""

    index: int = Field(ge=0)
    status: int = Field(examples=[415], description="the HTTP status this image would have had on its own")
    error: ErrorDetail


class PredictResponse(BaseModel):
    model: ModelSummary
    results: list[ImageResult | ImageFailure] = Field(description="one per image, in the request's order")


class ModelEntry(BaseModel):
    """One served model version, as `GET /v1/models` lists it (never a file-system path or file name)."""

    name: str
    version: str
    task: Task
    labels: list[str]
    variant: str = Field(description="the variant being served")
    variants: list[str] = Field(description="the variants found beside it (fp32, fp16, int8)")
    provider: str
    default: bool = Field(description="the model `POST /predict` uses")
    explain: bool = Field(description="whether it has a heatmaps output (`?explain=true`)")
    record: dict[str, Any] = Field(description="the model record, without build-machine paths")
    caveats: list[str] = Field(
        default_factory=list,
        description="what the record says against relying on the model: trained on a subset, or no better than "
        "chance on validation (empty for a finished model)",
    )


class ModelList(BaseModel):
    models: list[ModelEntry]


class HealthStatus(BaseModel):
    status: str = Field(examples=["ok"])
