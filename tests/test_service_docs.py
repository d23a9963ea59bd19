"""Swagger UI and ReDoc from the server itself: every asset the pages reference is fetched, none is external."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from pydantic import SecretStr
from service_support import RunningServer, metric_samples, running_server, sample, tiny_model

from service.config import Settings
from service.docs import ASSETS

# Hosts a documentation bundle typically pulls from at run time (scripts, fonts, logos). Swagger UI's online
# validator is named in its bundle but switched off by swagger-init.js (tested below).
CDN_HOSTS = ("cdn.", "unpkg.com", "jsdelivr", "googleapis", "gstatic", "cloudflare", "cdn.redoc.ly")
URL_IN_CSS = re.compile(r"url\(\s*['\"]?([^'\")\s]+)|@import\s+['\"]([^'\"]+)")


class References(HTMLParser):
    """Every URL an HTML page makes the browser load or open: src, href and spec-url attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "spec-url", "data-openapi-url") and value:
                self.urls.append(value)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with running_server(Settings(model_path=tiny_model()), wait_ready=False) as running:
        yield running


def assert_local(url: str, base: str) -> str:
    """The URL resolves on `base` itself; returns its path."""
    resolved = urlsplit(urljoin(base, url))
    assert (resolved.scheme, resolved.netloc) == tuple(urlsplit(base)[:2]), f"external reference {url!r}"
    return resolved.path


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_page_and_every_asset_it_references_come_from_this_server(server: RunningServer, page: str) -> None:
    with server.client() as client:
        response = client.get(page)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert "http://" not in response.text and "https://" not in response.text
        parser = References()
        parser.feed(response.text)
        assert parser.urls, "the page references no assets"
        seen_scripts = 0
        for url in parser.urls:
            if url.startswith("data:"):
                continue  # inline (the icon): nothing to fetch
            fetched = client.get(assert_local(url, server.url + page))
            assert fetched.status_code == 200, url
            assert fetched.content, url
            if url.endswith(".js"):
                seen_scripts += 1
                assert fetched.headers["content-type"].startswith("text/javascript")
                for host in CDN_HOSTS:
                    assert host not in fetched.text, f"{url} loads from {host}"
                assert "sourceMappingURL=" + "http" not in fetched.text
            elif url.endswith(".css"):
                assert fetched.headers["content-type"].startswith("text/css")
                for groups in URL_IN_CSS.findall(fetched.text):
                    target = next(filter(None, groups))
                    if not target.startswith("data:"):
                        assert_local(target, server.url + url)
            elif url.endswith(".json"):
                assert fetched.json()["openapi"].startswith("3.")
        assert seen_scripts >= 1


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/"])
def test_every_page_declares_its_icon_so_no_browser_asks_for_a_missing_favicon(
    server: RunningServer, page: str
) -> None:
    # Without a <link rel="icon">, a browser requests /favicon.ico, which this server does not have (a 404).
    with server.client() as client:
        html = client.get(page).text
        assert client.get("/favicon.ico").status_code == 404
    icons = [attrs for tag, attrs in Tags.of(html) if tag == "link" and "icon" in (attrs.get("rel") or "").split()]
    assert icons and all((attrs.get("href") or "").startswith("data:") for attrs in icons), icons


class Tags(HTMLParser):
    """(tag, attributes) of every start tag of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    @classmethod
    def of(cls, html: str) -> list[tuple[str, dict[str, str | None]]]:
        parser = cls()
        parser.feed(html)
        return parser.tags


def test_only_the_vendored_assets_are_served(server: RunningServer) -> None:
    with server.client() as client:
        for name in ASSETS:
            assert client.get(f"/static/docs/{name}").status_code == 200, name
        for bad in ("VENDORED.md", "..%2F..%2Fconfig.py", "swagger-ui-bundle.js.map"):
            missing = client.get(f"/static/docs/{bad}")
            assert missing.status_code == 404
            assert missing.json()["code"] == "not_found"
        assert client.get("/static/docs/LICENSE-redoc.txt").text.startswith("The MIT License")


def test_docs_routes_get_their_own_bounded_metric_labels(server: RunningServer) -> None:
    with server.client() as client:
        before = metric_samples(client)
        client.get("/docs")
        client.get("/redoc")
        client.get("/openapi.json")
        client.get("/static/docs/swagger-ui.css")
        client.get("/static/docs/no-such-asset.js")
        for index in range(5):
            client.get(f"/random/{index}")
        after = metric_samples(client)

    def delta(route: str, status: str) -> float:
        labels = {"route": route, "status": status}
        return sample(after, "serve_requests_total", **labels) - sample(before, "serve_requests_total", **labels)

    assert delta("/docs", "200") == delta("/redoc", "200") == delta("/openapi.json", "200") == 1
    assert delta("/static/docs/{asset}", "200") == 1
    assert delta("/static/docs/{asset}", "404") == 1
    assert delta("unmatched", "404") == 5
    routes = {dict(labels)["route"] for name, labels in after if name == "serve_requests_total"}
    assert not any(route.startswith("/random") for route in routes)


def test_openapi_documents_errors_with_the_body_we_send(server: RunningServer) -> None:
    with server.client() as client:
        spec = client.get("/openapi.json").json()
    error_body = spec["components"]["schemas"]["ErrorBody"]
    assert set(error_body["properties"]) == {"code", "detail", "request_id"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert "securitySchemes" not in spec["components"]  # no keys configured: Swagger UI offers no Authorize
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.rsplit("/", 1)[1] in ("ErrorBody", "OipError"), (path, method, status)
            assert "security" not in operation  # no keys configured: nothing to send


def test_with_keys_the_protected_routes_document_401_and_403() -> None:
    settings = Settings(model_path=tiny_model(), api_keys=SecretStr("k"), auth_open_routes="health,metrics,docs")
    with running_server(settings, wait_ready=False) as running, running.client() as client:
        spec = client.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "apiKey"}
    predict = spec["paths"]["/predict"]["post"]
    assert {"401", "403"} <= set(predict["responses"])
    assert predict["security"] == [{"bearer": []}, {"apiKey": []}]
    live = spec["paths"]["/health/live"]["get"]
    assert "401" not in live["responses"] and "security" not in live


def test_swagger_ui_turns_off_the_online_validator(server: RunningServer) -> None:
    with httpx.Client(base_url=server.url) as client:
        init = client.get("/static/docs/swagger-init.js").text
    assert "validatorUrl: null" in init
