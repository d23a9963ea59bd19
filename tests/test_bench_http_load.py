"""bench/http_load.py, the benchmarks' lean HTTP client, against a real service: the answers it reads are the
ones the server sent (a wrong parse would make every benchmark figure wrong)."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path

import pytest
from PIL import Image
from service_support import reference_probabilities, running_server, tiny_model

from service.config import Settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from http_load import Connection, build_post


def png(side: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize((side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_keep_alive_posts_multipart_and_raw_bodies_and_reads_each_answer_whole() -> None:
    image = png()
    expected = float(reference_probabilities(tiny_model(), image)[0])
    with running_server(Settings(model_path=tiny_model())) as server:
        host, port = server.url.removeprefix("http://").split(":")

        async def session() -> list[tuple[int, bytes]]:
            connection = Connection(host, int(port))
            answers = []
            for content_type in ("multipart", "image/png", "multipart", "text/plain", "multipart"):
                response = await connection.send(
                    build_post(host, int(port), "/predict", image, content_type=content_type)
                )
                answers.append((response.status, response.body))
            await connection.close()
            return answers

        answers = asyncio.run(session())
    assert [status for status, _ in answers] == [200, 200, 200, 415, 200]
    for status, body in answers:
        answer = json.loads(body)  # each body read whole: no bytes of the next answer, none missing
        if status == 200:
            assert answer["results"][0]["predictions"][0]["probability"] == pytest.approx(expected, abs=1e-5)
        else:
            assert answer["code"] == "unsupported_media_type"


def test_a_connection_the_server_closes_is_opened_again_for_the_next_request() -> None:
    image = png()
    with running_server(Settings(model_path=tiny_model())) as server:
        host, port = server.url.removeprefix("http://").split(":")

        async def session() -> list[tuple[int, bool]]:
            connection = Connection(host, int(port))
            closing = build_post(host, int(port), "/predict", image, keep_alive=False)
            answers = []
            for request in (closing, build_post(host, int(port), "/predict", image)):
                response = await connection.send(request)
                answers.append((response.status, response.closes))
            await connection.close()
            return answers

        assert asyncio.run(session()) == [(200, True), (200, False)]
