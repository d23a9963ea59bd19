"""Response bodies: pydantic models, so /docs shows integration engineers the exact shapes."""

from __future__ import annotations

from pydantic import BaseModel, Field

from medcore.record import Task


class ErrorBody(BaseModel):
    """Every error: a stable machine-readable `code`, a human `detail` and the request's id (`X-Request-ID`)."""

    code: str = Field(examples=["not_an_image"])
    detail: str = Field(examples=["not an image in a readable format (PNG, JPEG, TIFF, BMP)"])
    request_id: str | None = Field(default=None, examples=["3f2b8c1e9a7d4e5f8a6b0c1d2e3f4a5b"])


class ModelSummary(BaseModel):
    name: str
    version: str
    task: Task


class LabelPrediction(BaseModel):
    label: str
    probability: float = Field(ge=0, le=1)
    threshold: float = Field(ge=0, le=1, description="from the model record")
    positive: bool = Field(description="the decision: probability reached the threshold (multiclass: argmax)")


class Timings(BaseModel):
    """Milliseconds spent in each stage of this request, measured on the server."""

    preprocess: float = Field(description="read, decode and preprocess the upload (with any wait for a decode thread)")
    queue: float = Field(description="wait for the batch to start")
    inference: float = Field(description="the onnxruntime call for the whole batch")
    total: float = Field(description="from the handler receiving the upload to the response")


class PredictResponse(BaseModel):
    model: ModelSummary
    predictions: list[LabelPrediction] = Field(description="one entry per label, in the record's order")
    batch_size: int = Field(ge=1, description="images in the onnxruntime call that served this one")
    timings_ms: Timings


class HealthStatus(BaseModel):
    status: str = Field(examples=["ok"])
