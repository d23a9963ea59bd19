"""Open Inference Protocol v2 (the KServe / Triton REST API) over the same registry and batchers as /predict.

`POST /v2/models/{name}[/versions/{v}]/infer` takes either the FP32 `input` tensor [N, C, H, W] (already
preprocessed) or the BYTES `image` input [N] (encoded files, base64 in JSON), and answers the FP32
`probabilities` [N, L], and for a model with an out-of-distribution output also `ood_score` [N] (FP32) and
`out_of_distribution` [N] (BOOL, the record's threshold applied). The N images are submitted together, so
they share batches. Inputs may also come in the protocol's binary tensor extension
(`Inference-Header-Content-Length`), as `tritonclient` sends them by default; answers are always JSON.
Errors use the protocol's `{"error": ...}` body (see `service.errors`), and anything a client sent wrong
is a 4xx: shapes, datatypes, base64, image data.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import struct
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from pydantic import ValidationError

from service.api.deps import MetricsDep, ReadyRuntimeDep, RegistryDep, RuntimeDep, SettingsDep
from service.batching import BatchError, BatchResult, NotReadyError
from service.errors import ERROR_DOCS, RETRY_AFTER_S, ServiceError, describe_error
from service.oip_schemas import (
    IMAGE_INPUT_NAME,
    OOD_FLAG_NAME,
    OOD_SCORE_NAME,
    OUTPUT_NAME,
    TENSOR_INPUT_NAME,
    InferenceRequest,
    InferenceResponse,
    LiveResponse,
    ModelMetadata,
    ModelReady,
    OipError,
    ReadyResponse,
    RequestInput,
    ResponseOutput,
    ServerMetadata,
    TensorMetadata,
)
from service.ood import assess
from service.registry import ServedModel
from service.request_context import annotate

router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])
SERVER_NAME = "medimaging-service"
PLATFORM = "onnxruntime_onnx"
BINARY_HEADER = "inference-header-content-length"
# Error codes that mean the image was refused before inference -> `serve_rejections_total{reason}`.
REJECTION_OF = {"queue_full": "queue_full", "deadline_exceeded": "deadline_exceeded", "not_ready": "not_ready"}


class OipRequestError(ServiceError):
    """The inference request itself is malformed: JSON, input names, shapes, datatypes, sizes or base64."""

    status = 400
    code = "invalid_request"


def oip_error_docs(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": OipError, "description": ERROR_DOCS[status]} for status in statuses}


@router.get("", response_model=ServerMetadata, summary="Server metadata")
async def server_metadata(request: Request) -> ServerMetadata:
    return ServerMetadata(name=SERVER_NAME, version=request.app.version, extensions=["binary_tensor_data"])


@router.get("/health/live", response_model=LiveResponse, responses=oip_error_docs(503), summary="Server live")
async def server_live(runtime: RuntimeDep) -> LiveResponse:
    if not runtime.registry.alive:
        raise NotReadyError(f"an inference worker stopped: {runtime.status}")
    return LiveResponse(live=True)


@router.get("/health/ready", response_model=ReadyResponse, responses=oip_error_docs(503), summary="Server ready")
async def server_ready(_: ReadyRuntimeDep) -> ReadyResponse:
    return ReadyResponse(ready=True)


@router.get("/models/{name}", response_model=ModelMetadata, responses=oip_error_docs(404, 503))
@router.get("/models/{name}/versions/{version}", response_model=ModelMetadata, responses=oip_error_docs(404, 503))
async def model_metadata(registry: RegistryDep, name: str, version: str | None = None) -> ModelMetadata:
    """Inputs (send exactly one: `input` FP32 [N, C, H, W] or `image` BYTES [N]) and the output, with the labels."""
    served = registry.get(name, version)
    channels, height, width = served.input_shape
    record = served.record
    return ModelMetadata(
        name=served.name,
        versions=[m.version for m in registry.models if m.name == served.name],
        platform=PLATFORM,
        inputs=[
            TensorMetadata(name=TENSOR_INPUT_NAME, datatype="FP32", shape=[-1, channels, height, width]),
            TensorMetadata(
                name=IMAGE_INPUT_NAME,
                datatype="BYTES",
                shape=[-1],
                parameters={"content": "encoded image files (PNG, JPEG, TIFF, BMP, DICOM), base64 in JSON"},
            ),
        ],
        outputs=[
            TensorMetadata(name=OUTPUT_NAME, datatype="FP32", shape=[-1, record.num_outputs]),
            *(
                [
                    TensorMetadata(name=OOD_SCORE_NAME, datatype="FP32", shape=[-1]),
                    TensorMetadata(name=OOD_FLAG_NAME, datatype="BOOL", shape=[-1]),
                ]
                if record.ood is not None
                else []
            ),
        ],
        parameters={
            "labels": list(record.labels),
            "task": record.task,
            "version": served.version,
            "variant": served.variant,
            "provider": served.provider,
        },
    )


@router.get("/models/{name}/ready", response_model=ModelReady, responses=oip_error_docs(404, 503))
@router.get("/models/{name}/versions/{version}/ready", response_model=ModelReady, responses=oip_error_docs(404, 503))
async def model_ready(runtime: RuntimeDep, name: str, version: str | None = None) -> ModelReady:
    served = runtime.registry.get(name, version)
    if not served.batcher.ready or not runtime.ready:
        raise NotReadyError(f"model {served.name} {served.version} is not ready: {served.batcher.status}")
    return ModelReady(name=served.name, version=served.version, ready=True)


_INFER_DOCS: dict[str, Any] = {
    "response_model": InferenceResponse,
    "responses": oip_error_docs(400, 404, 413, 415, 422, 500, 503),
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}}},
        }
    },
}


@router.post("/models/{name}/infer", summary="Infer (latest version)", **_INFER_DOCS)
@router.post("/models/{name}/versions/{version}/infer", summary="Infer", **_INFER_DOCS)
async def infer(
    request: Request,
    runtime: ReadyRuntimeDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    name: str,
    version: str | None = None,
) -> InferenceResponse:
    """Probabilities for N images, given as the preprocessed FP32 `input` tensor or as encoded `image` files."""
    deadline = time.monotonic() + settings.deadline_ms / 1e3
    served = runtime.registry.get(name, version)
    annotate(model=served.name, version=served.version)
    body = await request.body()
    parsed, tensors = parse_request(body, request.headers.get(BINARY_HEADER))
    known = [OUTPUT_NAME] + [OOD_SCORE_NAME, OOD_FLAG_NAME] * (served.record.ood is not None)
    for output in parsed.outputs or ():
        if output.name not in known:
            raise OipRequestError(f"unknown output {output.name!r}; model {served.name} has {known}")
    wanted = [output.name for output in parsed.outputs] if parsed.outputs else known
    (given,) = _one_input(parsed)
    if given.shape and given.shape[0] > settings.max_files:
        raise OipRequestError(
            f"at most {settings.max_files} images per request (SERVE_MAX_FILES); {given.name!r} has {given.shape[0]}",
            status=413,
            code="too_many_images",
        )
    results = await _run(served, given, tensors, deadline, metrics)
    probabilities = np.stack([result.probabilities for result in results]).astype(np.float32)
    annotate(images=len(results), batch_size=max(result.batch_size for result in results))
    return InferenceResponse(
        model_name=served.name,
        model_version=served.version,
        id=parsed.id,
        parameters={"labels": list(served.record.labels), "batch_sizes": [result.batch_size for result in results]},
        outputs=[output for output in _outputs(served, results, probabilities) if output.name in wanted],
    )


def _outputs(served: ServedModel, results: list[BatchResult], probabilities: np.ndarray) -> list[ResponseOutput]:
    """The response tensors: probabilities, and the out-of-distribution score and flag where the model has them."""
    outputs = [
        ResponseOutput(
            name=OUTPUT_NAME, shape=list(probabilities.shape), datatype="FP32", data=probabilities.ravel().tolist()
        )
    ]
    if served.record.ood is None:
        return outputs
    if any(r.ood_score is None for r in results):
        raise BatchError(f"model {served.name} returned no {OOD_SCORE_NAME!r} for an image")
    assessed = [assess(served.record, r.ood_score) for r in results]
    scores = [float(np.float32(a.score)) for a in assessed if a.score is not None]
    flags = [bool(a.flagged) for a in assessed]
    outputs.append(ResponseOutput(name=OOD_SCORE_NAME, shape=[len(scores)], datatype="FP32", data=scores))
    outputs.append(ResponseOutput(name=OOD_FLAG_NAME, shape=[len(flags)], datatype="BOOL", data=flags))
    return outputs


async def _run(
    served: ServedModel,
    given: RequestInput,
    tensors: dict[str, bytes],
    deadline: float,
    metrics: MetricsDep,
) -> list[BatchResult]:
    """Submit every image of the request at once (they share batches); the first failure fails the request."""
    if given.name == IMAGE_INPUT_NAME:
        images = _images(given, tensors.get(given.name))
        jobs = [_timed_bytes(served, data, deadline, metrics) for data in images]
    else:
        batch = _tensor(given, tensors.get(given.name), served.input_shape)
        jobs = [served.infer(np.ascontiguousarray(chw), deadline=deadline) for chw in batch]
    outcomes = await asyncio.gather(*jobs, return_exceptions=True)
    results: list[BatchResult] = []
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, BaseException):
            if not isinstance(outcome, Exception):
                raise outcome
            error = _element_error(given.name, index, outcome)
            if isinstance(error, ServiceError) and error.code in REJECTION_OF:
                metrics.reject(REJECTION_OF[error.code])
            raise error from outcome
        metrics.queue_wait.observe(outcome.queue_wait_s)
        results.append(outcome)
    return results


async def _timed_bytes(served: ServedModel, data: bytes, deadline: float, metrics: MetricsDep) -> BatchResult:
    done = await served.infer_bytes(data, deadline=deadline)
    metrics.preprocess.observe(done.preprocess_s)
    return done.result


def _element_error(input_name: str, index: int, exc: Exception) -> Exception:
    described = describe_error(exc)
    if described is None:
        return exc  # a server fault: the request-context middleware logs it and answers 500
    status, code, detail = described
    error = ServiceError(f"input {input_name!r} element {index}: {detail}", status=status, code=code)
    if status == 503:
        error.headers = {"Retry-After": str(RETRY_AFTER_S)}
    return error


def parse_request(body: bytes, binary_header: str | None) -> tuple[InferenceRequest, dict[str, bytes]]:
    """The JSON inference request and, for the binary extension, each binary input's raw bytes by name."""
    header_length = len(body)
    if binary_header is not None:
        if not binary_header.isdigit() or int(binary_header) > len(body):
            raise OipRequestError(f"Inference-Header-Content-Length {binary_header!r} is not a size within the body")
        header_length = int(binary_header)
    try:
        parsed = InferenceRequest.model_validate(json.loads(body[:header_length]))
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, ValidationError):
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise OipRequestError(f"not a valid inference request: {problems}") from None
        raise OipRequestError("the request body is not JSON") from None
    tensors: dict[str, bytes] = {}
    offset = header_length
    for given in parsed.inputs:
        size = (given.parameters or {}).get("binary_data_size")
        if size is None:
            continue
        if not isinstance(size, int) or size < 0 or offset + size > len(body):
            raise OipRequestError(f"input {given.name!r}: binary_data_size {size!r} runs past the body")
        tensors[given.name] = body[offset : offset + size]
        offset += size
    if offset != len(body):
        raise OipRequestError(f"{len(body) - offset} bytes after the tensors that no binary_data_size accounts for")
    return parsed, tensors


def _one_input(parsed: InferenceRequest) -> tuple[RequestInput]:
    names = [given.name for given in parsed.inputs]
    unknown = [name for name in names if name not in (TENSOR_INPUT_NAME, IMAGE_INPUT_NAME)]
    if unknown:
        raise OipRequestError(f"unknown input {unknown[0]!r}; send {TENSOR_INPUT_NAME!r} or {IMAGE_INPUT_NAME!r}")
    if len(names) != 1:
        raise OipRequestError(f"send exactly one input, {TENSOR_INPUT_NAME!r} or {IMAGE_INPUT_NAME!r}; got {names}")
    return (parsed.inputs[0],)


def _tensor(given: RequestInput, raw: bytes | None, chw: tuple[int, int, int]) -> np.ndarray:
    """The FP32 [N, C, H, W] input, from JSON data or binary data, checked against the model."""
    expected = f"[N, {', '.join(map(str, chw))}]"
    if given.datatype != "FP32":
        raise OipRequestError(f"input {given.name!r} must have datatype FP32, got {given.datatype}")
    if len(given.shape) != 4 or tuple(given.shape[1:]) != chw or given.shape[0] < 1:
        raise OipRequestError(f"input {given.name!r} must have shape {expected}, got {given.shape}")
    count = int(np.prod(given.shape))
    if raw is not None:
        if len(raw) != count * 4:
            raise OipRequestError(f"input {given.name!r}: {len(raw)} binary bytes for shape {given.shape} (FP32)")
        values = np.frombuffer(raw, dtype="<f4")
    else:
        try:
            values = np.asarray(given.data if given.data is not None else [], dtype=np.float32).ravel()
        except (TypeError, ValueError):
            raise OipRequestError(f"input {given.name!r}: data must be numbers (FP32)") from None
        if values.size != count:
            raise OipRequestError(f"input {given.name!r}: {values.size} values for shape {given.shape}")
    if not np.isfinite(values).all():
        raise OipRequestError(f"input {given.name!r}: the data holds NaN or infinite values")
    return values.astype(np.float32, copy=False).reshape(given.shape)


def _images(given: RequestInput, raw: bytes | None) -> list[bytes]:
    """The encoded files of the BYTES input: base64 strings in JSON, or the binary extension's length-prefixed."""
    if given.datatype != "BYTES":
        raise OipRequestError(f"input {given.name!r} must have datatype BYTES, got {given.datatype}")
    if not given.shape or given.shape[0] < 1 or int(np.prod(given.shape)) != given.shape[0]:
        raise OipRequestError(f"input {given.name!r} must have shape [N] (or [N, 1]), got {given.shape}")
    count = given.shape[0]
    images = _length_prefixed(given.name, raw) if raw is not None else _base64_elements(given)
    if len(images) != count:
        raise OipRequestError(f"input {given.name!r}: {len(images)} elements for shape {given.shape}")
    return images


def _base64_elements(given: RequestInput) -> list[bytes]:
    images = []
    for index, element in enumerate(np.asarray(given.data or [], dtype=object).ravel()):
        if not isinstance(element, str):
            raise OipRequestError(f"input {given.name!r} element {index}: expected a base64 string")
        try:
            images.append(base64.b64decode(element, validate=True))
        except (binascii.Error, ValueError):
            raise OipRequestError(f"input {given.name!r} element {index}: not valid base64") from None
    return images


def _length_prefixed(name: str, raw: bytes) -> list[bytes]:
    """Triton's binary BYTES layout: each element is a little-endian uint32 length, then that many bytes."""
    images, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise OipRequestError(f"input {name!r}: binary BYTES data is cut inside an element's length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise OipRequestError(f"input {name!r}: a binary BYTES element of {length} bytes runs past the data")
        images.append(raw[offset : offset + length])
        offset += length
    return images
