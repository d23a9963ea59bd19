"""Turn exceptions into JSON error responses `{"code", "detail"}` with the right HTTP status."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from medcore.imaging import ImageError
from medcore.imaging.decode import READABLE_FORMATS
from service.batching import BatchError, NotReadyError, QueueFullError
from service.schemas import ErrorBody

RETRY_AFTER_S = 1
IMAGE_ERROR_STATUS = {"empty_file": 400, "corrupt_image": 400, "not_an_image": 415, "image_too_large": 413}


def error_response(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(code=code, detail=detail).model_dump(), status_code=status, headers=headers)


def _retry_later(code: str, detail: str) -> JSONResponse:
    return error_response(503, code, detail, headers={"Retry-After": str(RETRY_AFTER_S)})


async def _image_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImageError)
    return error_response(IMAGE_ERROR_STATUS.get(exc.code, 400), exc.code, str(exc))


async def _queue_full(_: Request, exc: Exception) -> JSONResponse:
    return _retry_later("queue_full", str(exc))


async def _not_ready(_: Request, exc: Exception) -> JSONResponse:
    return _retry_later("not_ready", str(exc))


async def _batch_failed(_: Request, exc: Exception) -> JSONResponse:
    return error_response(500, "inference_failed", str(exc))


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
    return error_response(422, "validation_error", "; ".join(problems))


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after this response, so the server still logs the traceback.
    return error_response(500, "internal_error", "the server hit an unexpected error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ImageError, _image_error)
    app.add_exception_handler(QueueFullError, _queue_full)
    app.add_exception_handler(NotReadyError, _not_ready)
    app.add_exception_handler(BatchError, _batch_failed)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)


def error_docs(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given statuses, all with the `ErrorBody` schema."""
    return {status: {"model": ErrorBody, "description": ERROR_DOCS[status]} for status in statuses}


ERROR_DOCS = {
    400: "`empty_file`: the upload is empty; `corrupt_image`: truncated or damaged image data",
    413: "`image_too_large`: more pixels than SERVE_MAX_IMAGE_PIXELS; `body_too_large`: request body "
    "larger than SERVE_MAX_BODY_BYTES",
    415: f"`not_an_image`: not one of {', '.join(READABLE_FORMATS)} (detected from the content, never the file name)",
    422: "`validation_error`: the multipart field `file` is missing or not a file",
    500: "`inference_failed`: the model call for this request's batch failed",
    503: "`queue_full` or `not_ready` (warming up, shutting down); a `Retry-After` header says when to retry",
}
