"""The page's routes without a browser: what is served, with which headers, and that nothing points off the server."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from service_support import RunningServer, running_server, tiny_model

from service.config import BUNDLED_MODEL, Settings
from service.ui.cards import CardNotFoundError, find_card
from service.ui.routes import ASSETS, STATIC_DIR

# Anything that could make a browser contact another host: absolute or protocol-relative URLs, CSS imports.
EXTERNAL = re.compile(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}|@import|@font-face", re.IGNORECASE)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with running_server(Settings(model_path=BUNDLED_MODEL, decode_threads=1, intra_op_threads=1)) as running:
        yield running


def test_the_page_and_its_assets_are_served_with_a_self_only_policy(server: RunningServer) -> None:
    with server.client() as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
        referenced = set(re.findall(r'(?:src|href)="(/ui/static/[^"]+)"', page.text))
        assert referenced == {f"/ui/static/{name}" for name in ASSETS}
        for path in referenced:
            asset = client.get(path)
            assert asset.status_code == 200, path
            assert asset.headers["content-type"] == ASSETS[path.rsplit("/", 1)[1]]
            assert asset.headers["x-content-type-options"] == "nosniff"


def test_no_asset_names_another_host() -> None:
    files = sorted(STATIC_DIR.iterdir())
    assert {f.name for f in files} == {*ASSETS, "index.html"}
    for path in files:
        found = EXTERNAL.findall(path.read_text(encoding="utf-8"))
        assert not found, f"{path.name} refers to another host: {found}"


def test_unknown_assets_are_a_json_404_and_never_reach_the_file_system(server: RunningServer) -> None:
    with server.client() as client:
        for name in ("index.htm", "..%2Fui%2Froutes.py", "%2E%2E%2F%2E%2E%2Fpyproject.toml", "app.js.map"):
            response = client.get(f"/ui/static/{name}")
            assert response.status_code == 404, name
            assert response.json()["code"] == "not_found"


def test_the_model_card_is_served_as_markdown(server: RunningServer) -> None:
    with server.client() as client:
        record = client.get("/model").json()
        card = client.get(f"/v1/models/{record['name']}/versions/{record['version']}/card")
        assert card.status_code == 200
        assert card.headers["content-type"] == "text/markdown; charset=utf-8"
        assert card.text == (BUNDLED_MODEL.parent / "MODEL_CARD.md").read_text(encoding="utf-8")
        assert "Not a medical device" in card.text
        missing = client.get(f"/v1/models/{record['name']}/versions/9.9.9/card")
        assert missing.status_code == 404
        assert missing.json()["code"] == "model_not_found"
        assert "/" not in missing.json()["detail"].replace("GET /v1/models", "")  # names the model, not a path


def test_a_model_without_a_card_says_so() -> None:
    with running_server(Settings(model_path=tiny_model(), decode_threads=1)) as running, running.client() as client:
        response = client.get("/v1/models/tiny-test/versions/0.0.1/card")
    assert response.status_code == 404
    assert response.json()["code"] == "card_not_found"
    assert response.json()["detail"] == "model 'tiny-test' version '0.0.1' has no model card"


def test_cards_are_found_in_the_model_directory_and_never_outside_it(tmp_path: Path) -> None:
    models = tmp_path / "models"
    folder = models / "tiny-test" / "0.0.1"
    folder.mkdir(parents=True)
    shutil.copy(tiny_model(), folder / "model.onnx")
    (folder / "MODEL_CARD.md").write_text("# Model card: tiny-test\n", encoding="utf-8")
    (tmp_path / "MODEL_CARD.md").write_text("outside the model directory\n", encoding="utf-8")
    (models / "no-card" / "1").mkdir(parents=True)
    shutil.copy(tiny_model(), models / "no-card" / "1" / "model.fp16.onnx")
    app = FastAPI()
    app.state.settings = Settings(model_dir=models, model_path=None)
    assert find_card(app, "tiny-test", "0.0.1") == (folder / "MODEL_CARD.md").resolve()
    with pytest.raises(CardNotFoundError) as missing:
        find_card(app, "no-card", "1")
    assert missing.value.code == "card_not_found"
    for name, version in (("tiny-test", "9"), ("..", "models"), ("tiny-test", ".."), (".", ".")):
        with pytest.raises(CardNotFoundError) as unknown:
            find_card(app, name, version)
        assert unknown.value.code == "model_not_found", (name, version)


def test_the_page_shows_the_results_out_of_distribution_warning_prominently(server: RunningServer) -> None:
    """The result panel has an alert box above the decision, filled from the result's own fields (no browser here:
    tests/test_ui_browser.py drives the page in Chromium)."""
    with server.client() as client:
        page = client.get("/").text
        script = client.get("/ui/static/app.js").text
    warning = page.index('id="ood-warning"')
    assert page.index('id="result-heading"') < warning < page.index('id="summary"')
    assert 'role="alert"' in page[warning - 60 : warning + 80]
    for field in ("item.out_of_distribution", "item.ood_score", "item.warning"):
        assert field in script
    assert "No out-of-distribution check for this model." in script
