"""Every result carries the out-of-distribution fields: the bundled model's in-graph score through a real server.

The bundled 1.0.0 has the `ood_score` output (added by `python -m export ood`, see its CARD_NOTES.md); a
PneumoniaMNIST test film passes the check, a photograph and a rendered document are flagged with the
plain-words warning, `/metrics` counts both per model, the Open Inference Protocol route returns the score
and the flag, and a model without the output answers null for both.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import sklearn
from data_location import DATA
from PIL import Image, ImageDraw
from service_support import RunningServer, metric_samples, post_image, running_server, sample, tiny_model

from medcore.imaging import load_model_input
from medcore.record import ONNX_METADATA_KEY, ModelRecord
from service.config import BUNDLED_MODEL, Settings
from service.ood import OUT_OF_DISTRIBUTION_WARNING

MNIST = DATA / "pneumoniamnist" / "pneumoniamnist_reconstructed_v2_splits.npz"
PHOTO = Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg"
TOLERANCE = 1e-5  # the same graph and preprocessing in and out of the service: float rounding only


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with running_server(Settings(model_path=BUNDLED_MODEL, decode_threads=1, intra_op_threads=1)) as running:
        yield running


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def document() -> bytes:
    page = Image.new("L", (850, 1100), 255)
    draw = ImageDraw.Draw(page)
    for row in range(40):
        draw.text((60, 60 + row * 24), "Discharge summary: patient seen, results normal, follow-up in 6 weeks.", fill=0)
    return png(page)


def direct(data: bytes) -> tuple[float, ModelRecord]:
    """The image's `ood_score` from onnxruntime directly, and the bundled record."""
    session = ort.InferenceSession(str(BUNDLED_MODEL), providers=["CPUExecutionProvider"])
    record = ModelRecord.from_json(session.get_modelmeta().custom_metadata_map[ONNX_METADATA_KEY])
    (score,) = session.run(["ood_score"], {"input": load_model_input(data, record.preprocessing)[None]})
    return float(score[0]), record


def in_distribution_film() -> bytes:
    """The PneumoniaMNIST test image (of the first 16 in the repository's sample) furthest inside the threshold."""
    with np.load(MNIST) as data:
        films = [png(Image.fromarray(image)) for image in data["test_images"][:16]]
    return min(films, key=lambda film: direct(film)[0])


def test_a_chest_film_passes_and_a_photograph_and_a_document_are_flagged_and_counted(server: RunningServer) -> None:
    film, photo, page = in_distribution_film(), PHOTO.read_bytes(), document()
    with server.client() as client:
        before = metric_samples(client)
        results = [post_image(client, data).json()["results"][0] for data in (film, photo, page)]
        after = metric_samples(client)
    labels = {"name": "pneumoniamnist-convnext_atto", "version": "1.0.0"}
    for data, result in zip((film, photo, page), results, strict=True):
        score, record = direct(data)
        assert result["ood_score"] == pytest.approx(score, rel=TOLERANCE)
        assert result["out_of_distribution"] is (score > record.ood.threshold)  # type: ignore[union-attr]
    assert results[0]["out_of_distribution"] is False and "warning" not in results[0]
    for flagged in results[1:]:
        assert flagged["out_of_distribution"] is True
        assert flagged["warning"] == OUT_OF_DISTRIBUTION_WARNING
        assert flagged["predictions"]  # the answer is still given, with its warning
    checked = sample(after, "serve_ood_checked_total", **labels) - sample(before, "serve_ood_checked_total", **labels)
    flagged_count = sample(after, "serve_out_of_distribution_total", **labels) - sample(
        before, "serve_out_of_distribution_total", **labels
    )
    assert (checked, flagged_count) == (3, 2)


def test_every_image_of_a_multi_file_request_carries_its_own_fields(server: RunningServer) -> None:
    film, photo = in_distribution_film(), PHOTO.read_bytes()
    files = [("file", ("a.png", film, "image/png")), ("file", ("b.jpg", photo, "image/jpeg"))]
    with server.client() as client:
        results = client.post("/predict", files=files).json()["results"]
    assert [r["out_of_distribution"] for r in results] == [False, True]
    assert all(isinstance(r["ood_score"], float) for r in results)


def test_the_open_inference_protocol_returns_the_score_and_the_flag(server: RunningServer) -> None:
    film, photo = in_distribution_film(), PHOTO.read_bytes()
    name = "pneumoniamnist-convnext_atto"
    encoded = [base64.b64encode(data).decode() for data in (film, photo)]
    body = {"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": encoded}]}
    with server.client() as client:
        metadata = client.get(f"/v2/models/{name}").json()
        answer = client.post(f"/v2/models/{name}/infer", json=body).json()
        only_flags = client.post(
            f"/v2/models/{name}/infer", json={**body, "outputs": [{"name": "out_of_distribution"}]}
        ).json()
    assert [o["name"] for o in metadata["outputs"]] == ["probabilities", "ood_score", "out_of_distribution"]
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert outputs["ood_score"]["datatype"] == "FP32" and outputs["ood_score"]["shape"] == [2]
    assert outputs["ood_score"]["data"][0] == pytest.approx(direct(film)[0], rel=TOLERANCE)
    assert outputs["out_of_distribution"] == {"name": "out_of_distribution", "shape": [2], "datatype": "BOOL",
                                              "parameters": None, "data": [False, True]}  # fmt: skip
    assert [o["name"] for o in only_flags["outputs"]] == ["out_of_distribution"]


def test_a_model_without_the_output_answers_null_and_counts_nothing() -> None:
    with running_server(Settings(model_path=tiny_model(), decode_threads=1)) as running, running.client() as client:
        result = post_image(client, PHOTO.read_bytes()).json()["results"][0]
        samples = metric_samples(client)
    assert result["ood_score"] is None and result["out_of_distribution"] is None and "warning" not in result
    assert not any(name.startswith(("serve_ood", "serve_out_of")) for name, _ in samples)
