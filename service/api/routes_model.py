"""GET /model: the served model's record, so clients read labels and thresholds instead of guessing."""

from __future__ import annotations

from fastapi import APIRouter

from medcore.record import ModelRecord
from service.api.deps import RuntimeDep
from service.errors import error_docs

router = APIRouter(tags=["model"])


@router.get("/model", response_model=ModelRecord, responses=error_docs(503), summary="The model record")
async def model_record(runtime: RuntimeDep) -> ModelRecord:
    """Labels (in output order), task, preprocessing, decision thresholds and training provenance."""
    return runtime.model.record
