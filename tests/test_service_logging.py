"""Request ids and structured logs, from the real entry point: one JSON object per stderr line."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re

import httpx
import pytest
from service_support import (
    COVID,
    TINY_RECORD,
    metric_samples,
    post_image,
    require_data,
    service_process,
    tiny_model,
)
from starlette.types import Receive, Scope, Send

from service.logs import REDACTED_MESSAGE, JsonFormatter, TextFormatter
from service.request_context import MAX_REQUEST_ID_LENGTH, RequestContextMiddleware

IMAGE = COVID / "000001-2.jpg"
NEW_ID = re.compile(r"[0-9a-f]{32}")


def test_request_ids_and_json_access_lines() -> None:
    require_data()
    data = IMAGE.read_bytes()
    oip_body = {
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [base64.b64encode(data).decode()]}]
    }
    with service_process({"SERVE_MODEL_PATH": str(tiny_model())}) as server, server.client() as client:
        echoed = client.get("/health/live", headers={"X-Request-ID": "trace-42.a:b_c"})
        assert echoed.headers["x-request-id"] == "trace-42.a:b_c"
        for unsafe in ("has spaces", "x" * (MAX_REQUEST_ID_LENGTH + 1), 'quote"d', "ünï"):
            made = client.get("/health/live", headers={"X-Request-ID": unsafe.encode()})
            assert NEW_ID.fullmatch(made.headers["x-request-id"]), unsafe
        assert client.get("/health/live", headers={"X-Request-ID": "y" * MAX_REQUEST_ID_LENGTH}).status_code == 200
        predicted = post_image(client, data)
        assert predicted.status_code == 200
        refused = client.post("/predict", files={"file": b"not an image"}, headers={"X-Request-ID": "bad-upload-1"})
        assert refused.status_code == 415
        assert refused.json()["request_id"] == "bad-upload-1" == refused.headers["x-request-id"]
        missing = client.get("/no/such/path")
        assert missing.json()["request_id"] == missing.headers["x-request-id"]
        oip = client.post(f"/v2/models/{TINY_RECORD['name']}/infer", json=oip_body, headers={"X-Request-ID": "oip-1"})
        assert oip.status_code == 200
        decode_count = metric_samples(client)[("serve_decode_seconds_count", frozenset())]
    assert decode_count == 2  # the /predict image and the OIP image; the refused upload never decoded
    lines = [line for line in server.lines if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "message", "request_id"} <= set(entry) for entry in entries)
    access = {entry["request_id"]: entry for entry in entries if entry["logger"] == "service.access"}
    line = access["trace-42.a:b_c"]
    assert (line["route"], line["method"], line["status"], line["request_bytes"]) == ("/health/live", "GET", 200, 0)
    assert line["response_bytes"] > 0 and line["duration_ms"] >= 0
    upload = access[predicted.headers["x-request-id"]]
    assert (upload["route"], upload["status"]) == ("/predict", 200)
    assert upload["request_bytes"] > len(data)  # the multipart body around the file
    assert upload["response_bytes"] == len(predicted.content)
    assert (upload["model"], upload["images"], upload["batch_size"]) == (TINY_RECORD["name"], 1, 1)
    assert (access["bad-upload-1"]["status"], access[missing.headers["x-request-id"]]["route"]) == (415, "unmatched")
    inference = access["oip-1"]
    assert (inference["route"], inference["model"], inference["version"]) == (
        "/v2/models/{name}/infer",
        TINY_RECORD["name"],
        TINY_RECORD["version"],
    )
    assert inference["images"] == 1 and inference["batch_size"] >= 1
    assert any(entry["logger"].startswith("uvicorn") for entry in entries)  # uvicorn's own lines are JSON too
    assert not any("GET /health/live HTTP/1.1" in entry["message"] for entry in entries)  # no raw-path access log


def record(name: str, message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, args, None)


def test_decoder_messages_are_withheld_and_fields_kept() -> None:
    formatter = JsonFormatter()
    leaked = json.loads(formatter.format(record("pydicom", "Invalid value for PatientName: %r", "DOE^JANE")))
    assert leaked["message"] == REDACTED_MESSAGE and "DOE" not in json.dumps(leaked)
    assert json.loads(formatter.format(record("py.warnings", "UserWarning: tag (0010,0010) 'DOE'")))["message"] == (
        REDACTED_MESSAGE
    )
    plain = record("service.app", "serving %s", "tiny")
    plain.route = "/predict"
    entry = json.loads(formatter.format(plain))
    assert (entry["message"], entry["route"], entry["level"], entry["request_id"]) == (
        "serving tiny",
        "/predict",
        "warning",
        None,
    )
    text = TextFormatter().format(record("PIL.PngImagePlugin", "chunk %s", "tEXt DOE"))
    assert REDACTED_MESSAGE in text and "DOE" not in text


def test_an_exception_is_one_json_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.logging.exception")
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    (line,) = stream.getvalue().splitlines()
    assert "RuntimeError: boom" in json.loads(line)["exception"]


def test_an_unexpected_error_is_a_json_500_with_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    async def broken_app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("a bug")

    async def get(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=RequestContextMiddleware(broken_app))
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return await client.get(path, headers={"X-Request-ID": "bug-1"})

    with caplog.at_level(logging.INFO):
        plain, oip = asyncio.run(get("/predict")), asyncio.run(get("/v2/models/x/infer"))
    assert plain.status_code == oip.status_code == 500
    assert plain.headers["x-request-id"] == "bug-1"
    assert plain.json() == {
        "code": "internal_error",
        "detail": "the server hit an unexpected error",
        "request_id": "bug-1",
    }
    assert oip.json() == {
        "error": "the server hit an unexpected error",
        "code": "internal_error",
        "request_id": "bug-1",
    }
    logged = [record for record in caplog.records if record.name == "service.request_context"]
    assert logged and logged[0].exc_info is not None  # the traceback is logged, once per failure
    access = [record for record in caplog.records if record.name == "service.access"]
    assert [vars(record)["status"] for record in access] == [500, 500]
