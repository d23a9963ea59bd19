"""Turn exceptions into JSON error responses with the right HTTP status and the request id.

Everywhere: `{"code", "detail", "request_id"}`. On Open Inference Protocol paths (`/v2...`) the body
takes that protocol's form, `{"error": <detail>}`, keeping `code` and `request_id` beside it.
"""

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
from service.batching import BatchError, DeadlineExceededError, NotReadyError, QueueFullError
from service.request_context import current
from service.schemas import ErrorBody

RETRY_AFTER_S = 1
IMAGE_ERROR_STATUS = {"empty_file": 400, "corrupt_image": 400, "not_an_image": 415, "image_too_large": 413}


class ServiceError(Exception):
    """An error the service answers as it is: subclasses set `status` and `code`; `detail` is the message."""

    status: int = 400
    code: str = "bad_request"
    headers: Mapping[str, str] | None = None

    def __init__(self, detail: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(detail)
        self.status = status or type(self).status
        self.code = code or type(self).code


def error_body(code: str, detail: str) -> dict[str, Any]:
    """The JSON body for the request being served now (OIP form on /v2 paths)."""
    context = current()
    request_id = context.request_id if context else None
    if context is not None and context.oip:
        return {"error": detail, "code": code, "request_id": request_id}
    return ErrorBody(code=code, detail=detail, request_id=request_id).model_dump()


def error_response(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, detail), status_code=status, headers=headers)


def _retry_later(code: str, detail: str) -> JSONResponse:
    return error_response(503, code, detail, headers={"Retry-After": str(RETRY_AFTER_S)})


async def _image_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImageError)
    status = getattr(exc, "status", None) or IMAGE_ERROR_STATUS.get(exc.code, 400)
    return error_response(status, exc.code, str(exc))


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(exc.status, exc.code, str(exc), headers=exc.headers)


async def _queue_full(_: Request, exc: Exception) -> JSONResponse:
    return _retry_later("queue_full", str(exc))


async def _not_ready(_: Request, exc: Exception) -> JSONResponse:
    return _retry_later("not_ready", str(exc))


async def _batch_failed(_: Request, exc: Exception) -> JSONResponse:
    return error_response(500, "inference_failed", str(exc))


async def _deadline(_: Request, exc: Exception) -> JSONResponse:
    return _retry_later("deadline_exceeded", str(exc))


def describe_error(exc: Exception) -> tuple[int, str, str] | None:
    """(status, code, detail) for an error one image of a request can fail with alone; None for others."""
    if isinstance(exc, ImageError):
        return getattr(exc, "status", None) or IMAGE_ERROR_STATUS.get(exc.code, 400), exc.code, str(exc)
    if isinstance(exc, ServiceError):
        return exc.status, exc.code, str(exc)
    codes = {QueueFullError: "queue_full", DeadlineExceededError: "deadline_exceeded", NotReadyError: "not_ready"}
    for kind, code in codes.items():
        if isinstance(exc, kind):
            return 503, code, str(exc)
    if isinstance(exc, BatchError):
        return 500, "inference_failed", str(exc)
    return None


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Names the field and the rule, never the value the client sent (it could be anything).
    problems = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
    return error_response(422, "validation_error", "; ".join(problems))


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    # Only reached without RequestContextMiddleware, which logs and answers unexpected errors itself.
    return error_response(500, "internal_error", "the server hit an unexpected error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ImageError, _image_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(QueueFullError, _queue_full)
    app.add_exception_handler(NotReadyError, _not_ready)
    app.add_exception_handler(BatchError, _batch_failed)
    app.add_exception_handler(DeadlineExceededError, _deadline)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)


def error_docs(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given statuses, all with the `ErrorBody` schema."""
    return {status: {"model": ErrorBody, "description": ERROR_DOCS[status]} for status in statuses}


ERROR_DOCS = {
    400: "`empty_file`, `corrupt_image`, `invalid_image`: empty, truncated or damaged image data; "
    "`bad_request`: a malformed request",
    401: "`unauthorized`: API keys are configured and the request carries none "
    "(send `Authorization: Bearer <key>` or `X-API-Key: <key>`)",
    403: "`forbidden`: the API key is not one of the configured keys",
    404: "`model_not_found`: no such model name or version; `not_found`: no such path",
    405: "`method_not_allowed`: the path exists but not with this HTTP method",
    413: "`image_too_large`, `decode_budget_exceeded`: the decoded image would exceed SERVE_MAX_IMAGE_PIXELS or "
    "the memory budget; `body_too_large`: request body larger than SERVE_MAX_BODY_BYTES; `too_many_files`, "
    "`too_many_images`: more images than SERVE_MAX_FILES",
    415: f"`not_an_image`: not one of {', '.join(READABLE_FORMATS)} (detected from the content, never the file "
    "name); `unsupported_transfer_syntax`, `unsupported_pixel_format`",
    422: "`validation_error`: a missing or malformed field; `unusable_image`, `wrong_channel_count`, "
    "`channel_size`, `outside_intended_use`: a readable image the model cannot use; `explain_unavailable`",
    500: "`inference_failed`: the model call for this request's batch failed; `internal_error`: a server bug",
    503: "`queue_full`, `overloaded`, `deadline_exceeded`, `shutting_down` or `not_ready` (warming up); "
    "a `Retry-After` header says when to retry",
}
