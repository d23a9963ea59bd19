"""API documentation from local files: Swagger UI at /docs, ReDoc at /redoc, the OpenAPI document at /openapi.json.

The pages load only `/static/docs/<asset>` from this server (the vendored files, see
`service/static/docs/VENDORED.md`) and say so in a Content-Security-Policy, so they work on an
air-gapped network and a browser refuses anything else. The OpenAPI document is completed here:
the API-key security schemes, 401/403 on every route a key protects, and validation errors (422)
documented with the body the service really sends.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, Response

from service.auth import is_open
from service.config import Settings
from service.errors import ERROR_DOCS, error_response
from service.oip_schemas import InferenceRequest

STATIC_DIR = Path(__file__).resolve().parent / "static" / "docs"
ASSET_PREFIX = "/static/docs/"
# The only files served under ASSET_PREFIX: a fixed set, so the route label and the paths stay bounded.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-init.js": "text/javascript; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "LICENSE-swagger-ui.txt": "text/plain; charset=utf-8",
    "NOTICE-swagger-ui.txt": "text/plain; charset=utf-8",
    "LICENSE-redoc.txt": "text/plain; charset=utf-8",
}
# Inline styles: both UIs set element styles at run time; ReDoc runs its search index in a blob: worker.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'"
)
DOC_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}
REQUEST_SCHEMAS = (InferenceRequest,)
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer <key>`"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
}

_SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title} - Swagger UI</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{prefix}swagger-ui.css"></head>
<body><div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="{prefix}swagger-ui-bundle.js"></script>
<script src="{prefix}swagger-init.js"></script></body>
</html>
"""
_REDOC_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{title} - ReDoc</title>
<link rel="icon" href="data:,"></head>
<body><redoc spec-url="{openapi_url}"></redoc>
<script src="{prefix}redoc.standalone.js"></script></body>
</html>
"""


@functools.cache
def _read_asset(name: str) -> bytes:
    return (STATIC_DIR / name).read_bytes()


def install_docs(app: FastAPI, settings: Settings) -> None:
    """Add /docs, /redoc and the asset route; build FastAPI with `docs_url=None, redoc_url=None`."""
    title = app.title
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        page = _SWAGGER_PAGE.format(title=title, prefix=ASSET_PREFIX, openapi_url=openapi_url)
        return HTMLResponse(page, headers=DOC_HEADERS)

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        page = _REDOC_PAGE.format(title=title, prefix=ASSET_PREFIX, openapi_url=openapi_url)
        return HTMLResponse(page, headers=DOC_HEADERS)

    @app.get(ASSET_PREFIX + "{asset}", include_in_schema=False)
    async def docs_asset(asset: str) -> Response:
        media_type = ASSETS.get(asset)
        if media_type is None:
            return error_response(404, "not_found", f"no documentation asset {asset!r}; there are {sorted(ASSETS)}")
        headers = {**DOC_HEADERS, "Cache-Control": "public, max-age=86400"}
        return Response(_read_asset(asset), media_type=media_type, headers=headers)

    protected = bool(settings.api_keys.get_secret_value() or settings.api_keys_file)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            complete_openapi(spec, protected=protected, open_groups=settings.auth_open_routes)
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete_openapi(spec: dict[str, Any], *, protected: bool, open_groups: tuple[str, ...]) -> None:
    """Security schemes and the error responses every route can give, documented with `ErrorBody`."""
    components = spec.setdefault("components", {})
    if protected:
        components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    schemas = components.setdefault("schemas", {})
    for model in REQUEST_SCHEMAS:  # bodies the routes parse themselves, so FastAPI does not list them
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas.setdefault(model.__name__, schema)
    for path, operations in spec.get("paths", {}).items():
        oip = path == "/v2" or path.startswith("/v2/")
        error_ref = {"$ref": "#/components/schemas/" + ("OipError" if oip and "OipError" in schemas else "ErrorBody")}
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if "422" in responses:  # FastAPI documents its own HTTPValidationError; we send ErrorBody
                responses["422"] = _error_response(422, error_ref)
            # What the middlewares and the path parameters can answer on any such route.
            for status, applies in ((404, "{" in path), (413, "requestBody" in operation), (503, path != "/v2")):
                if applies:
                    responses.setdefault(str(status), _error_response(status, error_ref))
            if protected and not is_open(path, open_groups):
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
                responses.setdefault("401", _error_response(401, error_ref))
                responses.setdefault("403", _error_response(403, error_ref))
    for unused in ("HTTPValidationError", "ValidationError"):
        if not _referenced(spec, unused):
            schemas.pop(unused, None)


def _error_response(status: int, ref: dict[str, str]) -> dict[str, Any]:
    return {"description": ERROR_DOCS[status], "content": {"application/json": {"schema": ref}}}


def _referenced(spec: dict[str, Any], schema: str) -> bool:
    return f'"#/components/schemas/{schema}"' in json.dumps(spec.get("paths", {}))
