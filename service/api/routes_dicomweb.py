"""STOW-RS (`POST /dicomweb/studies[/{study}]`) and the outbox listing (`GET /v1/dicom/outbox`).

STOW-RS takes `multipart/related; type="application/dicom"` (PS3.18 10.5), every part one DICOM instance,
and runs each through the DICOM node exactly as a C-STORE (`DicomNode.receive`). The answer is the PS3.18
store response (`application/dicom+json`): inferred, already received and skipped instances in the Referenced
SOP Sequence, refused ones in the Failed SOP Sequence with a Failure Reason (0xA700 busy: retry; 0xA900 not
in the study of the path; 0xC122 transfer syntax not decoded; 0xC000 damaged). Each skipped or refused part
also gets a `Warning: 299` header naming the part and the reason code. Status: 200 all referenced and none
skipped; 202 some failed or skipped; 409 none stored; 503 (Retry-After) when every failure was transient.
A body that is not such a multipart, or a part that is not `application/dicom` DICOM, is a 4xx naming the part.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.api.deps import ReadyRuntimeDep
from service.dicom.node import DicomNode, Receipt
from service.dicom.stow import (
    CANNOT_UNDERSTAND,
    DATA_SET_MISMATCH,
    OUT_OF_RESOURCES,
    TRANSFER_SYNTAX,
    MultipartError,
    StoredInstance,
    parse_related,
    store_response,
)
from service.errors import RETRY_AFTER_S, ServiceError, error_docs

router = APIRouter(tags=["dicom"])

DICOM_JSON = "application/dicom+json"
STOW_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "one or more DICOM instances (PS3.10 files), one per part",
        "content": {'multipart/related; type="application/dicom"': {"schema": {"type": "string", "format": "binary"}}},
    }
}
STOW_ERRORS = error_docs(400, 401, 403, 404, 413, 415, 503)


class DicomDisabledError(ServiceError):
    status = 404
    code = "dicom_disabled"


def node_of(request: Request) -> DicomNode:
    dicom = getattr(request.app.state, "dicom", None)
    if dicom is None:
        raise DicomDisabledError("the DICOM node is off; set SERVE_DICOM_DESTINATION (where results go) to turn it on")
    node: DicomNode = dicom.node
    return node


@router.post("/dicomweb/studies", responses=STOW_ERRORS, summary="STOW-RS: store instances, get results back as DICOM",
             openapi_extra=STOW_BODY)  # fmt: skip
async def store_instances(request: Request, runtime: ReadyRuntimeDep) -> JSONResponse:
    return await _store(request, None)


@router.post("/dicomweb/studies/{study}", responses=STOW_ERRORS, summary="STOW-RS into one study",
             openapi_extra=STOW_BODY)  # fmt: skip
async def store_study_instances(study: str, request: Request, runtime: ReadyRuntimeDep) -> JSONResponse:
    """Instances whose Study Instance UID is not `study` fail with Failure Reason 0xA900."""
    return await _store(request, study)


async def _store(request: Request, study: str | None) -> JSONResponse:
    node = node_of(request)
    try:
        parts = parse_related(request.headers.get("content-type", ""), await request.body())
    except MultipartError as exc:
        raise ServiceError(str(exc), status=exc.status, code=exc.code) from None
    receipts = await asyncio.gather(*(node.receive(p, "dicomweb", study=study) for p in parts))
    instances = [StoredInstance(r.sop_class_uid, r.sop_instance_uid, _failure_reason(r)) for r in receipts]
    warnings = [
        f'299 medimaging "part {index}: {r.verdict} ({r.code})"'
        for index, r in enumerate(receipts, start=1)
        if r.verdict in ("skipped", "refused")
    ]
    refused = [r for r in receipts if not r.accepted]
    if not refused:
        status = 202 if warnings else 200
    elif len(refused) < len(receipts):
        status = 202
    else:
        status = 503 if all(r.transient for r in refused) else 409
    response = JSONResponse(store_response(instances), status_code=status, media_type=DICOM_JSON)
    for warning in warnings:
        response.headers.append("Warning", warning)
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _failure_reason(receipt: Receipt) -> int | None:
    if receipt.accepted:
        return None
    if receipt.transient:
        return OUT_OF_RESOURCES
    return {"unsupported_transfer_syntax": TRANSFER_SYNTAX, "study_mismatch": DATA_SET_MISMATCH}.get(
        receipt.code, CANNOT_UNDERSTAND
    )


@router.get("/v1/dicom/outbox", responses=error_docs(401, 403, 404), summary="The DICOM outbox: counts and UIDs")
async def outbox(request: Request) -> dict[str, Any]:
    """Results pending and dead letters (with attempts, age and last error code), counts, and the most
    recently skipped instances with their reason codes. Never a patient or study attribute."""
    summary: dict[str, Any] = node_of(request).outbox.summary()
    return summary
