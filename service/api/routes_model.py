"""GET /model and /v1/models...: the served models' records, so clients read labels and thresholds.

Records are served without file-system paths or file names (see `ServedModel.public_record`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from medcore.caveats import training_caveats
from service.api.deps import RegistryDep
from service.errors import error_docs
from service.registry import ServedModel
from service.schemas import ModelEntry, ModelList

router = APIRouter(tags=["model"])


@router.get("/model", responses=error_docs(503), summary="The default model's record")
async def model_record(registry: RegistryDep) -> dict[str, Any]:
    """Labels (in output order), task, preprocessing, decision thresholds, intended use and provenance."""
    return registry.default.public_record()


@router.get("/v1/models", response_model=ModelList, responses=error_docs(503), summary="Every served model")
async def list_models(registry: RegistryDep) -> ModelList:
    return ModelList(models=[entry(served) for served in registry.models])


@router.get(
    "/v1/models/{name}", response_model=ModelEntry, responses=error_docs(404, 503), summary="A model's highest version"
)
async def get_model(name: str, registry: RegistryDep) -> ModelEntry:
    return entry(registry.get(name))


@router.get(
    "/v1/models/{name}/versions/{version}",
    response_model=ModelEntry,
    responses=error_docs(404, 503),
    summary="One model version",
)
async def get_model_version(name: str, version: str, registry: RegistryDep) -> ModelEntry:
    return entry(registry.get(name, version))


def entry(served: ServedModel) -> ModelEntry:
    record = served.record
    return ModelEntry(
        name=record.name,
        version=record.version,
        task=record.task,
        labels=list(record.labels),
        variant=served.variant,
        variants=list(served.variants),
        provider=served.provider,
        default=served.is_default,
        explain=served.can_explain,
        record=served.public_record(),
        caveats=list(training_caveats(record)),
    )
