"""Find a served model's `MODEL_CARD.md`: the file beside its ONNX file in the model directory (contract 2)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from medcore.record import VARIANT_FILES
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
    """The served model's folder: SERVE_MODEL_PATH's, else SERVE_MODEL_DIR/<name>/<version>/ (contract 2)."""
    settings = app.state.settings
    runtime = getattr(app.state, "runtime", None)
    registry = getattr(runtime, "registry", None)
    if registry is not None:
        # The registry answers 404 `model_not_found` itself for a model it does not serve.
        served = registry.get(name, version)
        name, version = served.name, served.version
    elif runtime is not None and (runtime.model.record.name, runtime.model.record.version) != (name, version):
        raise CardNotFoundError("model_not_found", f"no served model named {name!r} with version {version!r}")
    model_path: Path | None = settings.model_path
    if model_path is not None:
        if runtime is None:
            raise NotReadyError("the model is not loaded")
        record = runtime.model.record
        if (record.name, record.version) == (name, version):
            return model_path.parent
    else:
        root = Path(settings.model_dir).resolve()
        folder = (root / name / version).resolve()
        # A name or version of ".." must not climb out of the model directory.
        if folder.parent.parent == root and any((folder / file).is_file() for file in VARIANT_FILES.values()):
            return folder
    raise CardNotFoundError(
        "model_not_found", f"no served model named {name!r} with version {version!r}; see GET /v1/models"
    )
