"""Cross-origin calls from browsers: an explicit policy, none allowed unless `SERVE_CORS_ORIGINS` names them.

Every CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) gets a definite answer instead
of a route's 405: 204 with the `Access-Control-Allow-*` headers for a named origin asking for an allowed method
and headers, else 403 `cors_forbidden` saying what was refused, with no `Access-Control-Allow-Origin`, so the
browser blocks the call. Simple cross-origin requests from an origin not named get no CORS headers either. The
preflight is answered before API keys are checked: browsers never send credentials on one.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from service.errors import error_response

ALLOWED_METHODS = ("GET", "POST")
ALLOWED_HEADERS = ("Authorization", "X-API-Key", "Content-Type", "X-Request-ID")
EXPOSED_HEADERS = ("X-Request-ID", "Retry-After")
PREFLIGHT_MAX_AGE_S = 600


class CorsPolicy(CORSMiddleware):
    """Starlette's CORS handling with the service's policy and its JSON refusal."""

    def __init__(self, app: ASGIApp, origins: tuple[str, ...]) -> None:
        super().__init__(
            app,
            allow_origins=origins,
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            max_age=PREFLIGHT_MAX_AGE_S,
        )
        self.origins = origins

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code == 200:
            answer.status_code = 204
            answer.body = b""
            del answer.headers["content-length"]
            del answer.headers["content-type"]
            return answer
        origin = request_headers["origin"]
        if not self.is_allowed_origin(origin=origin):
            named = ", ".join(self.origins) if self.origins else "none (SERVE_CORS_ORIGINS is empty)"
            detail = f"cross-origin calls from {origin} are not allowed; allowed origins: {named}"
        else:
            detail = (
                f"this cross-origin request is not allowed: methods {', '.join(ALLOWED_METHODS)}, "
                f"headers {', '.join(ALLOWED_HEADERS)}"
            )
        return error_response(403, "cors_forbidden", detail, headers={"Vary": "Origin"})
