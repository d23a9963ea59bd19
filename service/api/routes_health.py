"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import ReadyRuntimeDep, RuntimeDep
from service.batching import NotReadyError
from service.errors import error_docs
from service.schemas import HealthStatus

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=HealthStatus, responses=error_docs(503))
async def live(runtime: RuntimeDep) -> HealthStatus:
    """200 while the process serves HTTP and the inference worker has not died."""
    if not runtime.registry.alive:
        raise NotReadyError(f"the inference worker stopped: {runtime.registry.status}")
    return HealthStatus(status="alive")


@router.get("/ready", response_model=HealthStatus, responses=error_docs(503))
async def ready(runtime: ReadyRuntimeDep) -> HealthStatus:
    """200 once every model is loaded and has run a warm-up inference; 503 `not_ready` before and while draining."""
    if not runtime.ready:
        raise NotReadyError(f"the model is not ready: {runtime.status}")
    return HealthStatus(status="ready")
