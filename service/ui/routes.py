"""`GET /` (the page), `GET /ui/static/{name}` (its assets) and `GET /v1/models/{name}/versions/{version}/card`.

The page and its assets carry a Content-Security-Policy that lets the browser load and contact only this
server, so an air-gapped deployment cannot depend on anything outside it by accident.
"""

from __future__ import annotations

import functools
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from service.errors import error_docs, error_response
from service.schemas import ErrorBody
from service.ui.cards import CardNotFoundError, find_card

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The only files served: a fixed table, so no request path ever reaches the file system.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "markdown.js": "text/javascript; charset=utf-8",
    "reading.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter()


@functools.cache
def _read(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page() -> HTMLResponse:
    return HTMLResponse(_read("index.html"), headers=SECURITY_HEADERS)


@router.get("/ui/static/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        return error_response(404, "not_found", f"no page asset named {name!r}; the assets are {sorted(ASSETS)}")
    return Response(_read(name), media_type=media_type, headers=SECURITY_HEADERS)


@router.get(
    "/v1/models/{name}/versions/{version}/card",
    response_class=Response,
    responses={
        200: {"content": {"text/markdown": {}}, "description": "MODEL_CARD.md"},
        **error_docs(503),
        404: {"model": ErrorBody, "description": "`model_not_found`: no such model; `card_not_found`: it has no card"},
    },
    summary="The model card",
    tags=["model"],
)
async def card(name: str, version: str, request: Request) -> Response:
    """The model's `MODEL_CARD.md` (Markdown) from its model directory; 404 `model_not_found` or `card_not_found`."""
    try:
        text = find_card(request.app, name, version).read_text(encoding="utf-8")
    except CardNotFoundError as exc:
        return error_response(404, exc.code, str(exc))
    return Response(text, media_type="text/markdown; charset=utf-8")
