"""What the lifespan builds and the routes use: the model registry, admission control and the drain state."""

from __future__ import annotations

from dataclasses import dataclass

from service.admission import Admission
from service.model import LoadedModel
from service.registry import ModelRegistry


@dataclass(frozen=True)
class Runtime:
    registry: ModelRegistry
    admission: Admission

    @property
    def ready(self) -> bool:
        return self.registry.ready and not self.admission.draining

    @property
    def status(self) -> str:
        return "shutting down" if self.admission.draining else self.registry.status

    @property
    def model(self) -> LoadedModel:
        """The default model (what `/predict` and `/model` serve)."""
        return self.registry.default.model
