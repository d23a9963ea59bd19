"""Annotated dependencies: routes declare what they need, the app state provides it."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.batching import NotReadyError
from service.config import Settings
from service.metrics import ServiceMetrics
from service.registry import ModelRegistry
from service.runtime import Runtime


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise NotReadyError("the model is not loaded")
    return runtime


def get_ready_runtime(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Runtime:
    """The runtime, once warm-up has run; 503 `not_ready` before. (Admission refuses new work while draining;
    what it admitted before still runs.)"""
    if not runtime.registry.ready:
        raise NotReadyError(f"the model is not ready: {runtime.registry.status}")
    return runtime


def get_registry(runtime: Annotated[Runtime, Depends(get_runtime)]) -> ModelRegistry:
    return runtime.registry


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ReadyRuntimeDep = Annotated[Runtime, Depends(get_ready_runtime)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
