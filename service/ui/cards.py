"""Find a served model's `MODEL_CARD.md`: the file beside its ONNX file in the model directory."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from service.batching import NotReadyError

CARD_FILE = "MODEL_CARD.md"


class CardNotFoundError(LookupError):
    """No served model has this name and version (`model_not_found`), or it has no card (`card_not_found`)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def find_card(app: FastAPI, name: str, version: str) -> Path:
    """The card's path; errors name the model but never a file-system path."""
    path = _model_folder(app, name, version) / CARD_FILE
    if not path.is_file():
        raise CardNotFoundError("card_not_found", f"model {name!r} version {version!r} has no model card")
    return path


def _model_folder(app: FastAPI, name: str, version: str) -> Path:
    runtime = getattr(app.state, "runtime", None)
    if runtime is None:
        raise NotReadyError("the model is not loaded")
    record = runtime.model.record
    if (record.name, record.version) != (name, version):
        raise CardNotFoundError(
            "model_not_found", f"no served model named {name!r} with version {version!r}; see GET /v1/models"
        )
    model_path: Path = app.state.settings.model_path
    return model_path.parent
