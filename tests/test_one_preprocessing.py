"""One implementation of preprocessing: the service's model input equals the trainer's eval tensor."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from service_support import COVID, KERMANY, TINY_RECORD, post_image, require_data, running_server, tiny_model

import service.registry as registry
from medcore.record import Preprocessing
from service.config import Settings
from trainer.data import ManifestDataset
from trainer.data.kermany import load_kermany


def test_service_tensor_equals_trainer_eval_tensor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_data()
    # A Kermany tree whose test split holds real files of every flavour: L and RGB JPEGs, PNG bytes in a .jpg.
    files = [*sorted(KERMANY.glob("IM-*.jpeg"))[:2], *sorted(KERMANY.glob("person*.jpeg"))[:2]]
    files += [COVID / "000001-12.jpg", COVID / "000001-2.jpg"]
    for split in ("train", "val", "test"):
        for index, source in enumerate(files):
            folder = tmp_path / split / ("NORMAL" if index % 2 else "PNEUMONIA")
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, folder / source.name)
    recipe = Preprocessing.model_validate(TINY_RECORD["preprocessing"])
    test_split = load_kermany(tmp_path).split("test")
    assert test_split.paths is not None
    dataset = ManifestDataset(test_split, recipe)
    trainer_tensors = {path.name: dataset[i][0].numpy() for i, path in enumerate(test_split.paths)}

    # Record every tensor the running service hands to the batcher.
    captured: list[np.ndarray] = []
    original = registry.load_model_input

    def spy(*args: object, **kwargs: object) -> np.ndarray:
        result = original(*args, **kwargs)  # type: ignore[arg-type]
        captured.append(result)
        return result

    monkeypatch.setattr(registry, "load_model_input", spy)
    with running_server(Settings(model_path=tiny_model(), max_batch_delay_ms=0)) as server, server.client() as client:
        for path in test_split.paths:
            captured.clear()
            response = post_image(client, path.read_bytes(), filename="upload.jpg")
            assert response.status_code == 200, response.text
            (served,) = captured
            assert served.dtype == np.float32
            assert np.array_equal(served, trainer_tensors[path.name]), path.name
