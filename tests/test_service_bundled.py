"""The bundled default model, served as shipped; skipped until its model.onnx exists."""

from __future__ import annotations

import pytest
from service_support import kermany_images, post_image, reference_probabilities, require_data, running_server

from service.config import BUNDLED_MODEL, Settings

pytestmark = pytest.mark.skipif(not BUNDLED_MODEL.is_file(), reason=f"{BUNDLED_MODEL} is not there yet")


def test_bundled_model_serves_a_real_chest_x_ray() -> None:
    require_data()
    data = kermany_images(1)[0].read_bytes()
    with running_server(Settings()) as server, server.client() as client:
        record = client.get("/model").json()
        response = post_image(client, data, filename="chest.jpeg")
    assert response.status_code == 200, response.text
    body = response.json()
    assert {key: body["model"][key] for key in ("name", "version", "task")} == {
        key: record[key] for key in ("name", "version", "task")
    }
    predictions = body["results"][0]["predictions"]
    assert [p["label"] for p in predictions] == record["labels"]
    expected = reference_probabilities(BUNDLED_MODEL, data)
    for prediction, want, label in zip(predictions, expected, record["labels"], strict=True):
        assert prediction["probability"] == pytest.approx(float(want), abs=1e-5)
        assert prediction["threshold"] == record["thresholds"][label]
