"""The model registry on a real server: a model directory, versions, variants, the default model, 404s,
and records served without build-machine paths."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_support import (
    COVID,
    RunningServer,
    build_heatmap_model,
    metric_samples,
    record_for,
    reference_probabilities,
    require_data,
    running_server,
    sample,
)

from service.config import BUNDLED_MODEL, MODEL_DIR, Settings
from service.model import ModelLoadError
from service.registry import build_registry, strip_private

IMAGE = COVID / "000001-2.jpg"


def make_model_dir(root: Path) -> Path:
    """alpha 1.0.0 (fp32 + int8 file), alpha 1.10.0, beta 0.1: three versions of two models."""
    build_heatmap_model(root / "alpha" / "1.0.0" / "model.onnx", record_for("alpha", "1.0.0"))
    build_heatmap_model(root / "alpha" / "1.0.0" / "model.int8.onnx", record_for("alpha", "1.0.0", variant="int8"))
    build_heatmap_model(root / "alpha" / "1.10.0" / "model.onnx", record_for("alpha", "1.10.0"))
    build_heatmap_model(root / "beta" / "0.1" / "model.onnx", record_for("beta", "0.1"), heatmaps=False)
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[RunningServer]:
    with running_server(Settings(model_dir=model_dir, default_model="beta")) as running:
        yield running


def test_v1_models_lists_every_version_with_variants_and_the_default(server: RunningServer) -> None:
    with server.client() as client:
        models = client.get("/v1/models").json()["models"]
    listed = [(m["name"], m["version"], m["variant"], m["variants"], m["default"], m["explain"]) for m in models]
    assert listed == [
        ("alpha", "1.10.0", "fp32", ["fp32"], False, True),  # versions compare numerically: 1.10 > 1.0
        ("alpha", "1.0.0", "fp32", ["fp32", "int8"], False, True),
        ("beta", "0.1", "fp32", ["fp32"], True, False),
    ]
    for m in models:
        assert m["record"]["name"] == m["name"] and m["labels"] == ["pneumonia"]
        assert m["provider"] == "CPUExecutionProvider"


def test_one_model_and_one_version_and_404s(server: RunningServer) -> None:
    with server.client() as client:
        assert client.get("/v1/models/alpha").json()["version"] == "1.10.0"
        assert client.get("/v1/models/alpha/versions/1.0.0").json()["variants"] == ["fp32", "int8"]
        for path in ("/v1/models/gamma", "/v1/models/alpha/versions/9.9"):
            response = client.get(path)
            assert response.status_code == 404, response.text
            assert response.json()["code"] == "model_not_found"
        data = b"not read"
        for path in ("/v1/models/gamma/predict", "/v1/models/alpha/versions/9.9/predict"):
            response = client.post(path, files={"file": ("x", data)})
            assert response.status_code == 404
            assert response.json()["code"] == "model_not_found"
        assert client.get("/model").json()["name"] == "beta"


def test_each_model_answers_with_its_own_weights(server: RunningServer, model_dir: Path) -> None:
    require_data()
    data = IMAGE.read_bytes()
    with server.client() as client:
        for name, version in (("alpha", "1.0.0"), ("alpha", "1.10.0"), ("beta", "0.1")):
            response = client.post(f"/v1/models/{name}/versions/{version}/predict", files={"file": ("x", data)})
            assert response.status_code == 200, response.text
            body = response.json()
            assert (body["model"]["name"], body["model"]["version"]) == (name, version)
            want = reference_probabilities(model_dir / name / version / "model.onnx", data)
            assert body["results"][0]["predictions"][0]["probability"] == pytest.approx(float(want[0]), abs=1e-5)
        default = client.post("/predict", files={"file": ("x", data)}).json()
        assert default["model"]["name"] == "beta"
        latest = client.post("/v1/models/alpha/predict", files={"file": ("x", data)}).json()
        assert latest["model"]["version"] == "1.10.0"


def test_each_model_has_its_own_inference_time_series(server: RunningServer) -> None:
    require_data()
    data = IMAGE.read_bytes()
    with server.client() as client:
        before = metric_samples(client)
        for name, version, times in (("alpha", "1.0.0", 2), ("beta", "0.1", 1)):
            for _ in range(times):
                url = f"/v1/models/{name}/versions/{version}/predict"
                assert client.post(url, files={"file": ("x", data)}).status_code == 200
        after = metric_samples(client)

    def calls(name: str, version: str) -> float:
        labels = {"name": name, "version": version}
        return sample(after, "serve_inference_seconds_count", **labels) - sample(
            before, "serve_inference_seconds_count", **labels
        )

    assert (calls("alpha", "1.0.0"), calls("beta", "0.1"), calls("alpha", "1.10.0")) == (2, 1, 0)


def test_variant_choice_and_a_record_that_contradicts_its_file_name(tmp_path: Path) -> None:
    root = make_model_dir(tmp_path / "models")
    with pytest.raises(ModelLoadError, match=r"alpha/1\.10\.0: variant int8 \(model\.int8\.onnx\) is missing"):
        build_registry(Settings(model_dir=root, variant="int8"))
    (root / "alpha" / "1.10.0").rename(tmp_path / "parked")
    (root / "beta").rename(tmp_path / "beta")
    registry = build_registry(Settings(model_dir=root, variant="int8"))
    assert registry.get("alpha").variant == "int8"
    # A file named as the int8 variant whose record says fp32 is refused.
    build_heatmap_model(root / "alpha" / "1.0.0" / "model.int8.onnx", record_for("alpha", "1.0.0"))
    with pytest.raises(ModelLoadError, match=r"named as the int8 variant .* record says variant 'fp32'"):
        build_registry(Settings(model_dir=root, variant="int8"))


def test_folder_names_must_equal_the_record(tmp_path: Path) -> None:
    build_heatmap_model(tmp_path / "alpha" / "2.0" / "model.onnx", record_for("alpha", "1.0.0"))
    with pytest.raises(ModelLoadError, match=r"folder alpha/2\.0 holds a model whose record says alpha/1\.0\.0"):
        build_registry(Settings(model_dir=tmp_path))


def test_default_model_setting_and_its_errors(model_dir: Path, tmp_path: Path) -> None:
    assert build_registry(Settings(model_dir=model_dir)).default.name == "alpha"  # first name, highest version
    assert build_registry(Settings(model_dir=model_dir, default_model="alpha/1.0.0")).default.version == "1.0.0"
    with pytest.raises(ModelLoadError, match="SERVE_DEFAULT_MODEL='gamma' is not served"):
        build_registry(Settings(model_dir=model_dir, default_model="gamma"))
    with pytest.raises(ModelLoadError, match=r"no <name>/<version>/model\.onnx under"):
        build_registry(Settings(model_dir=tmp_path))


def test_the_bundled_model_is_the_default_of_the_default_directory() -> None:
    registry = build_registry(Settings())
    assert registry.default.record.name == "pneumoniamnist-convnext_atto"
    assert (MODEL_DIR / registry.default.name / registry.default.version / "model.onnx") == BUNDLED_MODEL


@pytest.mark.skipif(not BUNDLED_MODEL.is_file(), reason=f"{BUNDLED_MODEL} is not there")
def test_served_records_hold_no_file_system_paths_or_file_names() -> None:
    with running_server(Settings()) as server, server.client() as client:
        record = client.get("/model").json()
        listed = client.get("/v1/models").text
    text = json.dumps(record)
    # The bundled record was written on a build machine: its data paths, run folder and data file names.
    for leak in ("/work", "../shared", "runs/exp", ".npz", "pneumoniamnist_reconstructed"):
        assert leak not in text and leak not in listed, leak
    provenance = record["provenance"]
    assert provenance["data"]["kind"] == "medmnist"
    assert provenance["data"]["file_hashes"] == ["194a7199bf9cbb2dd7f140ebd73fc4c2fa71f44049d84a8b5269dbbcf648ad48"]
    assert "output_dir" not in provenance["config"] and "path" not in provenance["config"]["data"]
    assert provenance["metrics"]["test"]["auroc"] > 0.9  # what is not a path stays


def test_strip_private_keeps_text_that_only_contains_a_slash() -> None:
    cleaned = strip_private({"note": "AP/PA view", "dir": "runs/x", "file": "labels.csv", "nested": [{"root": "/d"}]})
    assert cleaned == {"note": "AP/PA view", "nested": [{}]}
