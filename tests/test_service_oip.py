"""Open Inference Protocol v2 on a real server: raw JSON, the tritonclient HTTP client, and every 4xx path."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from service_support import (
    COVID,
    KERMANY,
    RGBA_PNG,
    TINY_RECORD,
    RunningServer,
    gated_server,
    metric_samples,
    reference_probabilities,
    require_data,
    running_server,
    sample,
    tiny_model,
)

from medcore.imaging import load_model_input
from medcore.record import ModelRecord
from service.config import Settings

NAME, VERSION = TINY_RECORD["name"], TINY_RECORD["version"]
INFER = f"/v2/models/{NAME}/infer"
IMAGES = [COVID / "000001-2.jpg", RGBA_PNG]
TOLERANCE = 1e-5  # same onnxruntime model and preprocessing: differences are float rounding only


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    require_data()
    with running_server(Settings(model_path=tiny_model(), max_body_bytes=4 * 1024 * 1024)) as running:
        yield running


def image_input(*datas: bytes) -> dict[str, object]:
    return {
        "name": "image",
        "shape": [len(datas)],
        "datatype": "BYTES",
        "data": [base64.b64encode(data).decode() for data in datas],
    }


def tensor_of(*datas: bytes) -> np.ndarray:
    preprocessing = ModelRecord.model_validate(TINY_RECORD).preprocessing
    return np.stack([load_model_input(data, preprocessing) for data in datas])


def assert_oip_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code", "request_id"}
    assert body["error"] and body["request_id"] == response.headers["x-request-id"]
    if code is not None:
        assert body["code"] == code, body


def test_server_and_model_metadata(server: RunningServer) -> None:
    with server.client() as client:
        assert client.get("/v2").json() == {
            "name": "medimaging-service",
            "version": "0.1.0",
            "extensions": ["binary_tensor_data"],
        }
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        metadata = client.get(f"/v2/models/{NAME}").json()
        assert client.get(f"/v2/models/{NAME}/versions/{VERSION}").json() == metadata
        assert client.get(f"/v2/models/{NAME}/ready").json() == {"name": NAME, "version": VERSION, "ready": True}
        assert client.get(f"/v2/models/{NAME}/versions/{VERSION}/ready").status_code == 200
    assert metadata["versions"] == [VERSION] and metadata["platform"] == "onnxruntime_onnx"
    inputs = {item["name"]: (item["datatype"], item["shape"]) for item in metadata["inputs"]}
    assert inputs == {"input": ("FP32", [-1, 1, 28, 28]), "image": ("BYTES", [-1])}
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 1], "parameters": None}]
    assert metadata["parameters"]["labels"] == ["pneumonia"]


def test_bytes_and_tensor_inputs_give_the_reference_answer(server: RunningServer) -> None:
    datas = [path.read_bytes() for path in IMAGES]
    expected = np.stack([reference_probabilities(tiny_model(), data) for data in datas])
    tensor = tensor_of(*datas)
    tensor_input = {"name": "input", "shape": list(tensor.shape), "datatype": "FP32", "data": tensor.ravel().tolist()}
    with server.client() as client:
        by_bytes = client.post(INFER, json={"id": "req-1", "inputs": [image_input(*datas)]})
        by_tensor = client.post(f"/v2/models/{NAME}/versions/{VERSION}/infer", json={"inputs": [tensor_input]})
    for response in (by_bytes, by_tensor):
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["model_name"], body["model_version"]) == (NAME, VERSION)
        (output,) = body["outputs"]
        assert (output["name"], output["datatype"], output["shape"]) == ("probabilities", "FP32", [2, 1])
        np.testing.assert_allclose(np.reshape(output["data"], (2, 1)), expected, atol=TOLERANCE)
    assert by_bytes.json()["id"] == "req-1"


def test_the_tritonclient_http_client(server: RunningServer) -> None:
    http = pytest.importorskip("tritonclient.http", reason="tritonclient[http] (the dev extra) is not installed")
    from tritonclient.utils import InferenceServerException

    datas = [path.read_bytes() for path in IMAGES]
    expected = np.stack([reference_probabilities(tiny_model(), data) for data in datas])
    client = http.InferenceServerClient(server.url.removeprefix("http://"))
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
        metadata = client.get_model_metadata(NAME)
        assert [item["name"] for item in metadata["inputs"]] == ["input", "image"]
        for binary in (True, False):
            images = http.InferInput("image", [len(datas)], "BYTES")
            if binary:
                images.set_data_from_numpy(np.array(datas, dtype=np.object_), binary_data=True)
            else:
                encoded = [base64.b64encode(data) for data in datas]
                images.set_data_from_numpy(np.array(encoded, dtype=np.object_), binary_data=False)
            tensor = http.InferInput("input", [2, 1, 28, 28], "FP32")
            tensor.set_data_from_numpy(tensor_of(*datas), binary_data=binary)
            wanted = [http.InferRequestedOutput("probabilities", binary_data=binary)]
            for given in (images, tensor):
                result = client.infer(NAME, [given], outputs=wanted, model_version=VERSION)
                np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=TOLERANCE)
        wrong = http.InferInput("input", [1, 3, 28, 28], "FP32")
        wrong.set_data_from_numpy(np.zeros((1, 3, 28, 28), np.float32))
        with pytest.raises(InferenceServerException, match=r"shape \[N, 1, 28, 28\]"):
            client.infer(NAME, [wrong])
        with pytest.raises(InferenceServerException, match="no model named"):
            client.get_model_metadata("absent-model")
    finally:
        client.close()


def fp32(shape: list[int], data: list[float] | None = None, datatype: str = "FP32") -> dict[str, object]:
    values = data if data is not None else [0.0] * int(np.prod(shape))
    return {"name": "input", "shape": shape, "datatype": datatype, "data": values}


@pytest.mark.parametrize(
    ("payload", "status", "code", "message"),
    [
        ({"inputs": [fp32([1, 1, 28, 28], datatype="FP64")]}, 400, "invalid_request", "datatype FP32"),
        ({"inputs": [fp32([1, 1, 28, 28], datatype="FLOAT")]}, 400, "invalid_request", "datatype"),
        ({"inputs": [fp32([1, 3, 28, 28])]}, 400, "invalid_request", r"shape \[N, 1, 28, 28\]"),
        ({"inputs": [fp32([1, 28, 28])]}, 400, "invalid_request", "shape"),
        ({"inputs": [fp32([1, 1, 28, 28], [0.0] * 10)]}, 400, "invalid_request", "10 values"),
        ({"inputs": [fp32([1, 1, 28, 28], ["a"] * 784)]}, 400, "invalid_request", "numbers"),
        ({"inputs": [fp32([1, 1, 28, 28], [float("nan")] * 784)]}, 400, "invalid_request", None),
        ({"inputs": [{**fp32([1, 1, 28, 28]), "name": "pixels"}]}, 400, "invalid_request", "unknown input 'pixels'"),
        ({"inputs": [fp32([1, 1, 28, 28]), image_input(b"x")]}, 400, "invalid_request", "exactly one input"),
        ({"inputs": []}, 400, "invalid_request", "inputs"),
        ({"inputs": [{**image_input(b"x"), "datatype": "FP32"}]}, 400, "invalid_request", "BYTES"),
        ({"inputs": [{**image_input(b"x"), "shape": [2]}]}, 400, "invalid_request", "1 elements for shape"),
        ({"inputs": [{**image_input(b"x"), "data": ["***"]}]}, 400, "invalid_request", "not valid base64"),
        ({"inputs": [{**image_input(b"x"), "data": [7]}]}, 400, "invalid_request", "base64 string"),
        ({"inputs": [image_input(b"plain text, no image")]}, 415, "not_an_image", "element 0"),
        ({"inputs": [image_input(b"")]}, 400, "empty_file", None),
        ({"inputs": [fp32([1, 1, 28, 28])], "outputs": [{"name": "logits"}]}, 400, "invalid_request", "logits"),
        ({"inputs": [image_input(*[b"x"] * 17)]}, 413, "too_many_images", "SERVE_MAX_FILES"),
        ({"inputs": [fp32([17, 1, 28, 28])]}, 413, "too_many_images", "at most 16 images"),
    ],
)
def test_bad_requests_get_a_4xx_in_the_protocols_form(
    server: RunningServer, payload: dict[str, object], status: int, code: str, message: str | None
) -> None:
    with server.client() as client:
        # json.dumps writes NaN as the bare token NaN, which Python's JSON reader (the server's) accepts.
        response = client.post(INFER, content=json.dumps(payload), headers={"Content-Type": "application/json"})
    assert_oip_error(response, status, code)
    if message is not None:
        assert re.search(message, response.json()["error"]), response.json()


def test_one_bad_image_fails_the_request_and_names_it(server: RunningServer) -> None:
    good = IMAGES[0].read_bytes()
    whole = (KERMANY / "IM-0001-0001.jpeg").read_bytes()
    truncated = whole[: len(whole) // 2]
    with server.client() as client:
        response = client.post(INFER, json={"inputs": [image_input(good, truncated)]})
        assert_oip_error(response, 400)
        assert "element 1" in response.json()["error"]
        assert client.post(INFER, json={"inputs": [image_input(good)]}).status_code == 200


def test_unknown_models_bodies_and_methods(server: RunningServer) -> None:
    with server.client() as client:
        assert_oip_error(client.get("/v2/models/absent"), 404, "model_not_found")
        assert_oip_error(client.get(f"/v2/models/{NAME}/versions/9.9.9"), 404, "model_not_found")
        assert_oip_error(client.post("/v2/models/absent/infer", json={"inputs": [fp32([1, 1, 28, 28])]}), 404)
        assert_oip_error(client.post(INFER, content=b"{not json"), 400, "invalid_request")
        assert_oip_error(client.post(INFER, json=[1, 2]), 400, "invalid_request")
        binary = client.post(INFER, content=b'{"inputs": []}', headers={"Inference-Header-Content-Length": "999"})
        assert_oip_error(binary, 400, "invalid_request")
        assert_oip_error(client.get(INFER), 405)
        assert_oip_error(client.get("/v2/nothing-here"), 404)


def test_openapi_documents_the_protocol(server: RunningServer) -> None:
    with server.client() as client:
        spec = client.get("/openapi.json").json()
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert infer["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/InferenceRequest")
    assert infer["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/InferenceResponse")
    assert infer["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/OipError")
    assert spec["components"]["schemas"]["InferenceRequest"]["examples"]
    assert {"/v2", "/v2/health/live", "/v2/models/{name}/versions/{version}/ready"} <= set(spec["paths"])


def test_a_request_still_queued_at_its_deadline_is_a_503_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    tensor = {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}]}
    settings = Settings(model_path=tiny_model(), deadline_ms=300, max_batch_size=1)
    with gated_server(monkeypatch, settings) as (server, gate), server.client() as client:
        before = metric_samples(client)
        gate.close()
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.post, INFER, json=tensor)  # takes the worker and holds it at the gate
            assert gate.entered.wait(30)
            late = client.post(INFER, json=tensor)  # queued behind it until its deadline passes
            gate.open.set()
            assert first.result(30).status_code == 200
        assert_oip_error(late, 503, "deadline_exceeded")
        assert late.headers["retry-after"] == "1"
        after = metric_samples(client)
    reason = {"reason": "deadline_exceeded"}
    assert sample(after, "serve_rejections_total", **reason) - sample(before, "serve_rejections_total", **reason) == 1
