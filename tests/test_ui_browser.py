"""The web page in a real browser: Debian's Chromium driven by Playwright against a real uvicorn server.

Every page records the requests it makes; a request for any host other than the test server fails the test.
Screenshots go to each test's tmp_path, and also to $UI_SHOTS_DIR when that is set.
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import service_support
from data_location import DATA  # ../shared/data, else the small sample in tests/data
from PIL import Image
from service_support import gated_server, running_server

from service.config import BUNDLED_MODEL, Settings

CHROMIUM = Path(os.environ.get("UI_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
XRAY = DATA / "kermany_chest_xray_subset" / "images" / "person1000_virus_1681.jpeg"
NORMAL_XRAY = DATA / "kermany_chest_xray_subset" / "images" / "IM-0001-0001.jpeg"
DICOM = next((DATA / "dicom_samples").glob("SIIM_*_CR_chest_MONOCHROME2_jpeg.dcm"), DATA / "dicom_samples" / "missing")
NOT_AN_IMAGE = b"patient notes: this is a text file, not an image\n" * 20

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = [
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no browser at {CHROMIUM}: apt-get install -y chromium"),
    pytest.mark.skipif(
        not XRAY.is_file() or not DICOM.is_file(),
        reason=f"real images not found under {DATA} (CI keeps ../shared beside the clone)",
    ),
]


def _settings() -> Settings:
    # The default model directory (the bundled model), with few threads: the browser needs the cores too.
    return Settings(decode_threads=1, intra_op_threads=1)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with running_server(_settings()) as running:
        yield running


class Page:
    """A browser page on one server, with every request outside that server recorded and refused."""

    def __init__(self, browser: Any, url: str, tmp_path: Path, *, width: int = 1280, height: int = 900) -> None:
        self.url = url
        self.tmp_path = tmp_path
        self.foreign: list[str] = []
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.context.on("request", self._seen)
        self.page = self.context.new_page()
        # Routed on the page, not the context: Chromium drops a keyboard-opened file chooser under context routing.
        self.page.route("**/*", self._route)
        self.console_errors: list[str] = []
        self.page.on("console", lambda msg: msg.type == "error" and self.console_errors.append(msg.text))
        self.page.on("pageerror", lambda exc: self.console_errors.append(str(exc)))

    def _own(self, url: str) -> bool:
        target = urlsplit(url)
        return f"{target.scheme}://{target.netloc}" == self.url or target.scheme in ("data", "blob")

    def _seen(self, request: Any) -> None:
        if not self._own(request.url) and request.url not in self.foreign:
            self.foreign.append(request.url)

    def _route(self, route: Any) -> None:
        if self._own(route.request.url):
            route.continue_()
        else:
            self._seen(route.request)
            route.abort()

    def open(self) -> Any:
        self.page.goto(self.url + "/")
        sync_api.expect(self.page.locator("#model-name")).not_to_have_text("loading…")
        return self.page

    def shot(self, name: str, *, full_page: bool = True) -> Path:
        path = self.tmp_path / f"{name}.png"
        if full_page:  # else the sticky banner is drawn where the viewport was, mid-page
            self.page.evaluate("window.scrollTo(0, 0)")
        self.page.screenshot(path=str(path), full_page=full_page)
        shots = os.environ.get("UI_SHOTS_DIR")
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(shots) / path.name)
        return path

    def close(self) -> None:
        self.context.close()
        assert self.foreign == [], f"the page asked for other hosts: {self.foreign}"
        # 4xx answers the page handles itself show as console errors ("Failed to load resource"); nothing else may.
        unexpected = [text for text in self.console_errors if "Failed to load resource" not in text]
        assert unexpected == [], f"the page logged errors: {unexpected}"


@pytest.fixture
def open_page(browser: Any, tmp_path: Path) -> Iterator[Any]:
    pages: list[Page] = []

    def make(url: str, **kwargs: Any) -> Page:
        page = Page(browser, url, tmp_path, **kwargs)
        pages.append(page)
        return page

    yield make
    for page in pages:
        page.close()


def api_predict(url: str, data: bytes, model_name: str | None = None) -> dict[str, Any]:
    """The same upload straight to the API: what the page must show. Explain when the model has heatmaps."""
    with httpx.Client(base_url=url, timeout=60) as client:
        listing = client.get("/v1/models")
        path = "/predict"
        if listing.status_code == 200:
            models = listing.json()["models"]
            model = next(m for m in models if (m["name"] == model_name if model_name else m["default"]))
            path = f"/v1/models/{model['name']}/versions/{model['version']}/predict"
        response = client.post(path, params={"explain": "true"}, files={"file": ("image", data)})
        if response.status_code == 422 and response.json()["code"] == "explain_unavailable":
            response = client.post(path, files={"file": ("image", data)})
    assert response.status_code == 200, response.text
    body = response.json()
    (result,) = body.get("results", [body])
    return dict(result)


def assert_bars_match(page: Any, result: dict[str, Any]) -> None:
    rows = page.locator("#predictions li.prediction")
    sync_api.expect(rows).to_have_count(len(result["predictions"]))
    shown = {row.get_attribute("data-label"): row for row in rows.all()}
    for want in result["predictions"]:
        row = shown[want["label"]]
        assert float(row.get_attribute("data-probability")) == pytest.approx(want["probability"], abs=1e-6)
        assert row.locator(".probability").inner_text() == f"{want['probability']:.3f}"
        assert row.get_attribute("data-positive") == str(want["positive"]).lower()
        decision = row.locator(".prediction-decision").inner_text()
        bar = row.locator(".bar").bounding_box()
        fill = row.locator(".bar-fill").bounding_box()
        assert fill["width"] == pytest.approx(bar["width"] * want["probability"], abs=3)
        if want["threshold"] is not None:
            assert row.locator(".threshold").inner_text() == f"{want['threshold']:.3f}"
            mark = row.locator(".bar-threshold").bounding_box()
            assert mark["x"] - bar["x"] == pytest.approx(bar["width"] * want["threshold"], abs=4)
            assert mark["height"] > bar["height"]  # it stands out above and below the bar
            assert decision.startswith("positive" if want["positive"] else "negative")
    summary = page.locator("#summary").inner_text()
    if all(p["threshold"] is None for p in result["predictions"]):  # multiclass: the argmax, in words
        top = max(result["predictions"], key=lambda p: p["probability"])
        assert summary.startswith(f"Most likely: {top['label']}"), summary
    else:
        assert ("POSITIVE" in summary) == any(p["positive"] for p in result["predictions"]), summary
        # The page says what the number means (reading.js; its wording is tested in test_ui_page.py).
        reading = page.locator("#reading")
        sync_api.expect(reading).to_be_visible()
        sync_api.expect(reading).to_contain_text("comes from the threshold, not from 0.5")
        if len(result["predictions"]) == 1:
            assert "decision threshold" in summary and "validation split" in summary, summary


def assert_heatmap_matches(page: Any, result: dict[str, Any]) -> None:
    explanation = result.get("explanation")
    if explanation is None:
        # The model has no heatmap output: no toggle, and the page says why.
        sync_api.expect(page.locator("#heatmap-controls")).to_be_hidden()
        sync_api.expect(page.locator("#heatmap-note")).to_contain_text("no heatmap")
        return
    assert page.locator("#image").get_attribute("src") == f"data:image/png;base64,{explanation['image_png']}"
    overlay = page.locator("#heatmap")
    toggle = page.locator("#heatmap-toggle")
    if not toggle.is_checked():  # off at first; a later upload keeps the user's choice
        sync_api.expect(overlay).to_be_hidden()
        toggle.check()
    sync_api.expect(overlay).to_be_visible()
    label = overlay.get_attribute("data-label")
    want = next(h for h in explanation["heatmaps"] if h["label"] == label)
    assert overlay.get_attribute("src") == f"data:image/png;base64,{want['png']}"
    assert overlay.evaluate("img => img.naturalWidth") == explanation["width"]
    assert overlay.evaluate("img => img.naturalHeight") == explanation["height"]
    image_box, overlay_box = page.locator("#image").bounding_box(), overlay.bounding_box()
    for side in ("x", "y", "width", "height"):
        assert overlay_box[side] == pytest.approx(image_box[side], abs=1)
    page.locator("#heatmap-opacity").fill("80")
    assert overlay.evaluate("img => getComputedStyle(img).opacity") == "0.8"
    sync_api.expect(page.locator("#heatmap-opacity-value")).to_have_text("80 %")


def test_a_real_x_ray_shows_the_api_numbers_the_threshold_and_the_heatmap(server: Any, open_page: Any) -> None:
    view = open_page(server.url)
    page = view.open()
    sync_api.expect(page.locator("#banner")).to_contain_text("Not a medical device")
    page.locator("#file-input").set_input_files(str(XRAY))
    sync_api.expect(page.locator("#result-panel")).to_be_visible()
    result = api_predict(server.url, XRAY.read_bytes())
    assert_bars_match(page, result)
    sync_api.expect(page.locator("#image")).to_be_visible()
    assert page.locator("#image").evaluate("img => img.complete && img.naturalWidth > 0")
    assert_heatmap_matches(page, result)
    view.shot("xray-desktop")
    # The warning stays in view when the page is scrolled to the end.
    page.mouse.wheel(0, 5000)
    assert page.locator("#banner").bounding_box()["y"] == pytest.approx(0, abs=1)


def test_a_dicom_is_shown_from_the_servers_rendering(server: Any, open_page: Any) -> None:
    view = open_page(server.url)
    page = view.open()
    page.locator("#file-input").set_input_files(str(DICOM))
    sync_api.expect(page.locator("#result-panel")).to_be_visible()
    result = api_predict(server.url, DICOM.read_bytes())
    assert_bars_match(page, result)
    if result.get("explanation"):
        assert page.locator("#image").evaluate("img => img.complete && img.naturalWidth > 0")
    else:
        # Without an explanation the browser has nothing it can draw for a DICOM: it says so.
        sync_api.expect(page.locator("#no-preview")).to_be_visible()
    assert_heatmap_matches(page, result)
    view.shot("dicom-desktop")


def test_a_dropped_non_image_shows_the_apis_reason(server: Any, open_page: Any) -> None:
    view = open_page(server.url)
    page = view.open()
    with httpx.Client(base_url=server.url) as client:
        expected = client.post("/predict", files={"file": ("notes.txt", NOT_AN_IMAGE)})
    assert expected.status_code == 415
    transfer = page.evaluate_handle(
        """text => { const t = new DataTransfer();
                     t.items.add(new File([text], 'notes.txt', {type: 'text/plain'})); return t; }""",
        NOT_AN_IMAGE.decode(),
    )
    page.locator("#drop-zone").dispatch_event("drop", {"dataTransfer": transfer})
    error = page.locator("#error")
    sync_api.expect(error).to_be_visible()
    sync_api.expect(error).to_have_attribute("role", "alert")
    sync_api.expect(page.locator("#error-text")).to_contain_text(expected.json()["detail"])
    sync_api.expect(page.locator("#error-text")).to_contain_text("not accepted (HTTP 415)")
    sync_api.expect(page.locator("#result-panel")).to_be_hidden()
    view.shot("rejected-file")


def test_keyboard_only_upload_on_a_narrow_screen(server: Any, open_page: Any) -> None:
    view = open_page(server.url, width=390, height=844)
    page = view.open()
    focused: list[str] = []
    for _ in range(12):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
        if focused[-1] == "choose-file":
            break
    assert focused[-1] == "choose-file", f"Tab never reached the upload button: {focused}"
    # Listening before the key press turns Chromium's chooser interception on early (expect_file_chooser races it).
    choosers: list[Any] = []
    page.on("filechooser", lambda chooser: choosers.append(chooser))
    page.evaluate("0")
    page.keyboard.press("Enter")
    for _ in range(200):
        if choosers:
            break
        page.wait_for_timeout(50)
    assert choosers, "Enter on the upload button opened no file chooser"
    choosers[0].set_files(str(NORMAL_XRAY))
    sync_api.expect(page.locator("#result-panel")).to_be_visible()
    assert_bars_match(page, api_predict(server.url, NORMAL_XRAY.read_bytes()))
    # Nothing wider than the phone's screen, and the result heading has the focus for screen readers.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.evaluate("document.activeElement.id") == "result-heading"
    view.shot("xray-narrow", full_page=False)


def test_the_model_card_opens_in_a_dialog_and_closes_with_escape(server: Any, open_page: Any) -> None:
    view = open_page(server.url)
    page = view.open()
    page.locator("#card-link").click()
    dialog = page.locator("#card-dialog")
    sync_api.expect(dialog).to_be_visible()
    sync_api.expect(dialog.locator("#card-body h3").first).to_contain_text("Model card")
    sync_api.expect(dialog.locator("#card-body table").first).to_be_visible()
    view.shot("model-card", full_page=False)
    page.keyboard.press("Escape")
    sync_api.expect(dialog).to_be_hidden()


def test_a_warming_up_service_asks_to_retry_and_the_retry_works(
    monkeypatch: pytest.MonkeyPatch, open_page: Any
) -> None:
    with gated_server(monkeypatch, _settings(), closed=True) as (running, gate):
        view = open_page(running.url)
        page = view.open()
        page.locator("#file-input").set_input_files(str(XRAY))
        sync_api.expect(page.locator("#error-text")).to_contain_text("busy or still starting")
        retry = page.locator("#retry")
        sync_api.expect(retry).to_be_visible()
        sync_api.expect(retry).to_be_focused()
        view.shot("retry-503")
        gate.open.set()
        with httpx.Client(base_url=running.url) as client:
            for _ in range(300):
                if client.get("/health/ready").status_code == 200:
                    break
                page.wait_for_timeout(20)
        page.keyboard.press("Enter")
        sync_api.expect(page.locator("#result-panel")).to_be_visible()
        sync_api.expect(page.locator("#error")).to_be_hidden()


def test_with_auth_on_the_page_asks_for_the_key_and_keeps_it_in_memory_only(open_page: Any) -> None:
    key = "ui-test-key-4b1d"
    settings = Settings(
        model_path=BUNDLED_MODEL, decode_threads=1, intra_op_threads=1, api_keys=key,
        auth_open_routes=("health", "metrics", "ui"),
    )  # fmt: skip
    with running_server(settings) as running:
        view = open_page(running.url)
        page = view.page
        page.goto(running.url + "/")
        form = page.locator("#key-form")
        sync_api.expect(form).to_be_visible()
        sync_api.expect(page.locator("#api-key")).to_be_focused()
        sync_api.expect(page.locator("#key-reason")).to_contain_text("asks for an API key")
        sync_api.expect(page.locator("#banner")).to_be_visible()
        view.shot("api-key-prompt", full_page=False)
        page.locator("#api-key").fill("wrong-key")
        page.keyboard.press("Enter")
        sync_api.expect(page.locator("#key-reason")).to_contain_text("not allowed")
        sync_api.expect(form).to_be_visible()
        page.locator("#api-key").fill(key)
        page.keyboard.press("Enter")
        sync_api.expect(form).to_be_hidden()
        sync_api.expect(page.locator("#model-name")).to_have_text("pneumoniamnist-convnext_atto")
        assert page.locator("#api-key").input_value() == ""
        page.locator("#file-input").set_input_files(str(XRAY))
        sync_api.expect(page.locator("#result-panel")).to_be_visible()
        page.locator("#card-link").click()
        sync_api.expect(page.locator("#card-dialog #card-body table").first).to_be_visible()
        kept = page.evaluate(
            "JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie + location.href"
        )
        assert key not in kept


def test_several_models_get_a_picker_and_a_heatmap_model_explains_x_rays_and_dicoms(
    tmp_path: Path, open_page: Any
) -> None:
    models = tmp_path / "models"
    bundled = models / "pneumoniamnist-convnext_atto" / "1.0.0"
    bundled.mkdir(parents=True)
    for name in ("model.onnx", "MODEL_CARD.md"):
        (bundled / name).symlink_to(BUNDLED_MODEL.parent / name)
    labels = ("effusion", "nodule", "pneumonia")
    use = {
        "description": "Adult chest radiographs, frontal views",
        "modalities": ["CR", "DX"],
        "body_parts": ["CHEST"],
        "view_positions": ["PA", "AP"],
        "out_of_scope": ["lateral views", "children"],
    }
    record = service_support.record_for("cam-test", "0.0.1", task="multilabel", labels=labels, intended_use=use)
    service_support.build_heatmap_model(models / "cam-test" / "0.0.1" / "model.onnx", record)
    settings = Settings(
        model_dir=models, model_path=None, default_model="pneumoniamnist-convnext_atto",
        decode_threads=1, intra_op_threads=1,
    )  # fmt: skip
    with running_server(settings) as running:
        view = open_page(running.url)
        page = view.open()
        picker = page.locator("#model-select")
        sync_api.expect(page.locator("#model-picker")).to_be_visible()
        sync_api.expect(picker.locator("option")).to_have_count(2)
        sync_api.expect(page.locator("#model-name")).to_have_text("pneumoniamnist-convnext_atto")
        picker.focus()
        picker.select_option(label="cam-test 0.0.1")
        sync_api.expect(page.locator("#model-name")).to_have_text("cam-test")
        sync_api.expect(page.locator("#model-use")).to_have_text(
            "Adult chest radiographs, frontal views (modalities CR, DX; body parts CHEST; views PA, AP)"
        )
        sync_api.expect(page.locator("#model-out-of-scope")).to_have_text("lateral views; children")
        for image, shot in ((XRAY, "heatmap-xray-real"), (DICOM, "heatmap-dicom-real")):
            page.locator("#result-panel").evaluate("panel => { panel.hidden = true; }")
            with page.expect_request(lambda request: request.method == "POST") as sent:
                page.locator("#file-input").set_input_files(str(image))
            assert urlsplit(sent.value.url).path == "/v1/models/cam-test/versions/0.0.1/predict"
            sync_api.expect(page.locator("#result-panel")).to_be_visible()
            result = api_predict(running.url, image.read_bytes(), "cam-test")
            assert result["explanation"]["heatmaps"], "the heatmap model gave no heatmaps"
            assert_bars_match(page, result)
            assert_heatmap_matches(page, result)
            view.shot(shot)
        page.locator("#card-link").click()
        sync_api.expect(page.locator("#card-body")).to_contain_text("No model card is available")


def _png_base64(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _contract_answer(task: str) -> dict[str, Any]:
    """A contract-3 predict body for a 3-label model, built from the real X-ray, with one coloured map per label."""
    with Image.open(XRAY) as image:
        gray = image.convert("L")
        gray.thumbnail((512, 512))
        pixels = np.asarray(gray)
    height, width = pixels.shape
    heatmaps = []
    for index, label in enumerate(("effusion", "nodule", "pneumonia")):
        rgba = np.zeros((height, width, 4), dtype=np.uint8)
        rgba[..., index] = 255
        rgba[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4, 3] = 200
        heatmaps.append({"label": label, "png": _png_base64(rgba)})
    if task == "multilabel":
        values = [("effusion", 0.71, 0.4), ("nodule", 0.12, 0.3), ("pneumonia", 0.35, 0.35)]
        predictions = [{"label": n, "probability": p, "threshold": t, "positive": p >= t} for n, p, t in values]
    else:
        values = [("effusion", 0.2), ("nodule", 0.7), ("pneumonia", 0.1)]
        predictions = [{"label": n, "probability": p, "threshold": None, "positive": n == "nodule"} for n, p in values]
    explanation = {"width": width, "height": height, "image_png": _png_base64(pixels), "heatmaps": heatmaps}
    result = {"index": 0, "predictions": predictions, "batch_size": 1, "timings_ms": {}, "explanation": explanation}
    return {"model": {"name": "m", "version": "1", "task": task}, "results": [result]}


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
def test_the_page_renders_contract_3_heatmaps_and_tasks(server: Any, open_page: Any, task: str) -> None:
    """The page against contract 3's explain answer for several labels; the test server's own predict answer is
    replaced by a contract-shaped one, because the bundled model has one label and no heatmap output (the real
    service's explain is checked end to end above whenever the served model has heatmaps)."""
    answer = _contract_answer(task)
    view = open_page(server.url)
    page = view.page
    page.route("**/predict*", lambda route: route.fulfill(status=200, json=answer))
    view.open()
    page.locator("#file-input").set_input_files(str(XRAY))
    sync_api.expect(page.locator("#result-panel")).to_be_visible()
    (result,) = answer["results"]
    assert_bars_match(page, result)
    shown = [row.get_attribute("data-label") for row in page.locator("#predictions li").all()]
    assert shown == [p["label"] for p in sorted(result["predictions"], key=lambda p: -p["probability"])]
    summary = page.locator("#summary").inner_text()
    if task == "multilabel":
        assert summary.startswith("POSITIVE for effusion, pneumonia"), summary
    else:
        assert summary.startswith("Most likely: nodule (probability 0.700"), summary
        sync_api.expect(page.locator(".bar-threshold")).to_have_count(0)
        sync_api.expect(page.locator("#legend")).to_contain_text("no thresholds")
    assert_heatmap_matches(page, result)
    # The map follows the chosen finding; the most probable one is shown first.
    labels = page.locator("#heatmap-label")
    sync_api.expect(labels).to_be_visible()
    assert labels.input_value() == shown[0]
    labels.select_option("pneumonia")
    pneumonia = next(h["png"] for h in result["explanation"]["heatmaps"] if h["label"] == "pneumonia")
    assert page.locator("#heatmap").get_attribute("src") == f"data:image/png;base64,{pneumonia}"
    page.locator("#heatmap-toggle").press("Space")  # keyboard: hide it again
    sync_api.expect(page.locator("#heatmap")).to_be_hidden()
    page.locator("#heatmap-toggle").press("Space")
    view.shot(f"heatmap-{task}")
    # Every control a screen reader reaches has a name; every image shown has a text alternative.
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('input, select, button, a[href], img')]
            .filter(el => el.getAttribute('aria-hidden') !== 'true' && el.offsetParent !== null)
            .filter(el => !((el.labels && el.labels.length) || el.getAttribute('aria-label')
                            || (el.tagName === 'IMG' ? el.alt : el.textContent.trim())))
            .map(el => el.outerHTML.slice(0, 80))"""
    )
    assert unnamed == []


def test_a_quick_run_is_flagged_on_the_page(server: Any, open_page: Any, tmp_path: Path) -> None:
    from test_caveats import quick_run

    from medcore.caveats import training_caveats

    finished = open_page(server.url).open()  # the bundled model: no caveat box
    sync_api.expect(finished.locator("#model-caveats")).to_be_hidden()
    model = service_support.build_tiny_model(tmp_path / "model.onnx", quick_run().to_json())
    with running_server(Settings(model_path=model, decode_threads=1, intra_op_threads=1)) as running:
        view = open_page(running.url)
        page = view.open()
        box = page.locator("#model-caveats")
        sync_api.expect(box).to_be_visible()
        sync_api.expect(box.locator("li")).to_have_count(2)
        for caveat in training_caveats(quick_run()):
            sync_api.expect(box).to_contain_text(caveat)
        view.shot("quick-run-caveats")
