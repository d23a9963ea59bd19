"""POST /predict and /v1/models/{name}[/versions/{version}]/predict: images in, per-label decisions out.

The body is multipart with 1..SERVE_MAX_FILES `file` parts, or one raw image (Content-Type image/png,
image/jpeg, image/tiff or application/dicom). Each image is decoded in the bounded decode pool and
queued for its model's next batch under the request's deadline; each gets its own result, in order,
and one bad image fails alone. A request of exactly one image that fails is answered with that error.
Upload file names are never read or logged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from medcore.decision import decide
from medcore.imaging.decode import READABLE_FORMATS
from medcore.record import Task
from service.api.deps import MetricsDep, ReadyRuntimeDep, SettingsDep
from service.config import Settings
from service.errors import ServiceError, describe_error, error_docs
from service.explain import render_explanation
from service.metrics import ServiceMetrics
from service.ood import assess
from service.registry import ExplainUnavailableError, ServedModel
from service.request_context import annotate
from service.schemas import (
    ErrorDetail,
    Explanation,
    ImageFailure,
    ImageResult,
    LabelPrediction,
    ModelSummary,
    PredictResponse,
    Timings,
)

router = APIRouter(tags=["inference"])

RAW_TYPES = ("image/png", "image/jpeg", "image/tiff", "application/dicom")
# Which rejection (serve_rejections_total{reason}) a per-image 503 counts as.
REJECTION_OF = {"queue_full": "queue_full", "deadline_exceeded": "deadline_exceeded", "not_ready": "not_ready"}


class UnsupportedMediaError(ServiceError):
    status = 415
    code = "unsupported_media_type"


class TooManyFilesError(ServiceError):
    status = 413
    code = "too_many_files"


class NoImageError(ServiceError):
    status = 422
    code = "validation_error"


_FILE_SCHEMA = {"type": "string", "format": "binary"}
REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": f"images ({', '.join(READABLE_FORMATS)}), read by content, never by file name",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "array", "items": _FILE_SCHEMA, "description": "1..SERVE_MAX_FILES images"}
                    },
                }
            },
            **{media: {"schema": _FILE_SCHEMA} for media in RAW_TYPES},
        },
    }
}
ExplainQuery = Annotated[
    bool, Query(description="also return per-label heatmap overlays (needs a model with a heatmaps output)")
]
PREDICT_ERRORS = error_docs(400, 404, 413, 415, 422, 500, 503)


@router.post(
    "/predict",
    response_model=PredictResponse,
    response_model_exclude_unset=True,
    responses=PREDICT_ERRORS,
    summary="Classify images with the default model",
    openapi_extra=REQUEST_BODY,
)
async def predict(
    request: Request,
    runtime: ReadyRuntimeDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    explain: ExplainQuery = False,
) -> PredictResponse:
    """Decode and preprocess each image exactly as in training, run it in the next batch, apply the
    record's thresholds (multiclass: the argmax; its threshold is null)."""
    return await serve(request, runtime.registry.default, settings, metrics, explain=explain)


@router.post(
    "/v1/models/{name}/predict",
    response_model=PredictResponse,
    response_model_exclude_unset=True,
    responses=PREDICT_ERRORS,
    summary="Classify images with the named model (its highest version)",
    openapi_extra=REQUEST_BODY,
)
async def predict_named(
    name: str,
    request: Request,
    runtime: ReadyRuntimeDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    explain: ExplainQuery = False,
) -> PredictResponse:
    return await serve(request, runtime.registry.get(name), settings, metrics, explain=explain)


@router.post(
    "/v1/models/{name}/versions/{version}/predict",
    response_model=PredictResponse,
    response_model_exclude_unset=True,
    responses=PREDICT_ERRORS,
    summary="Classify images with one model version",
    openapi_extra=REQUEST_BODY,
)
async def predict_version(
    name: str,
    version: str,
    request: Request,
    runtime: ReadyRuntimeDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    explain: ExplainQuery = False,
) -> PredictResponse:
    return await serve(request, runtime.registry.get(name, version), settings, metrics, explain=explain)


async def serve(
    request: Request, served: ServedModel, settings: Settings, metrics: ServiceMetrics, *, explain: bool
) -> PredictResponse:
    """Read the images, run each through the model under one deadline, shape the answer."""
    started = time.perf_counter()
    deadline = time.monotonic() + settings.deadline_ms / 1e3
    if explain and not served.can_explain:
        raise ExplainUnavailableError(
            f"model {served.name} {served.version} has no heatmaps output, so it cannot explain its answers"
        )
    annotate(model=served.name, version=served.version)
    images = await read_images(request, settings.max_files)
    annotate(images=len(images))
    tasks = [_one(served, i, data, started, deadline, settings, metrics, explain) for i, data in enumerate(images)]
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    results: list[ImageResult | ImageFailure] = []
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, BaseException):
            failure = describe_error(outcome) if isinstance(outcome, Exception) else None
            if failure is None:
                raise outcome
            status, code, detail = failure
            if code in REJECTION_OF:
                metrics.reject(REJECTION_OF[code])
            if len(images) == 1:
                raise outcome  # the request's own answer: the error handlers shape it
            results.append(ImageFailure(index=index, status=status, error=ErrorDetail(code=code, detail=detail)))
        else:
            results.append(outcome)
    served_sizes = [r.batch_size for r in results if isinstance(r, ImageResult)]
    if served_sizes:
        annotate(batch_size=max(served_sizes))
    return PredictResponse(model=summary(served), results=results)


def summary(served: ServedModel) -> ModelSummary:
    record = served.record
    return ModelSummary(
        name=record.name, version=record.version, task=record.task, variant=served.variant, provider=served.provider
    )


async def _one(
    served: ServedModel,
    index: int,
    data: bytes,
    started: float,
    deadline: float,
    settings: Settings,
    metrics: ServiceMetrics,
    explain: bool,
) -> ImageResult:
    done = await served.infer_bytes(data, deadline=deadline, explain=explain)
    result, preprocess_s = done.result, done.preprocess_s
    metrics.preprocess.observe(preprocess_s)
    metrics.queue_wait.observe(result.queue_wait_s)
    record = served.record
    (decisions,) = decide(result.probabilities[None, :], record)
    multiclass = record.task is Task.MULTICLASS
    explanation = None
    if explain and result.heatmaps is not None:
        maps = result.heatmaps
        rendered = await asyncio.get_running_loop().run_in_executor(
            served.decoder,
            lambda: render_explanation(
                data,
                maps,
                record.labels,
                record.preprocessing,
                max_pixels=settings.max_image_pixels,
                max_bytes=settings.max_decode_bytes,
            ),
        )
        explanation = Explanation.model_validate(rendered)
    ood = assess(record, result.ood_score)
    metrics.observe_ood(record.name, record.version, ood.flagged)
    extra: dict[str, Any] = {"explanation": explanation} if explanation is not None else {}  # left out, not null
    if ood.warning is not None:
        extra["warning"] = ood.warning
    return ImageResult(
        index=index,
        predictions=[
            LabelPrediction(
                label=d.label,
                probability=d.probability,
                threshold=None if multiclass else d.threshold,
                positive=d.positive,
            )
            for d in decisions
        ],
        batch_size=result.batch_size,
        timings_ms=Timings(
            preprocess=preprocess_s * 1e3,
            queue=result.queue_wait_s * 1e3,
            inference=result.inference_s * 1e3,
            total=(time.perf_counter() - started) * 1e3,
        ),
        ood_score=ood.score,
        out_of_distribution=ood.flagged,
        **extra,
    )


async def read_images(request: Request, max_files: int) -> list[bytes]:
    """The `file` parts of a multipart body, or the raw body for an image Content-Type."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media in RAW_TYPES:
        return [await request.body()]
    if media != "multipart/form-data":
        raise UnsupportedMediaError(
            f"Content-Type {media or '(none)'!r} is not accepted; send multipart/form-data with `file` parts "
            f"or a raw body of {', '.join(RAW_TYPES)}"
        )
    parser = MultiPartParser(request.headers, request.stream(), max_files=max_files, max_fields=max_files)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            raise TooManyFilesError(f"at most {max_files} files per request (SERVE_MAX_FILES)") from None
        raise ServiceError(f"the multipart body is malformed: {exc.message}", code="bad_multipart") from None
    try:
        parts = form.getlist("file")
        if not parts:
            raise NoImageError("body.file: the multipart body has no `file` part")
        if not all(isinstance(part, UploadFile) for part in parts):
            raise NoImageError("body.file: every `file` part must be a file upload, not a text field")
        return [await part.read() for part in parts if isinstance(part, UploadFile)]
    finally:
        await form.close()
