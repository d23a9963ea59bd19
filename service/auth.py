"""Optional API keys: `Authorization: Bearer <key>` or `X-API-Key: <key>`, checked before any body is parsed.

Keys come from `SERVE_API_KEYS` (comma-separated) and/or `SERVE_API_KEYS_FILE` (one key per line, `#`
comments). No keys configured: every route is open. With keys, only the route groups named in
`SERVE_AUTH_OPEN_ROUTES` (default `health,metrics,ui`; also `docs`) stay open; anything else answers
401 `unauthorized` without a key and 403 `forbidden` with a wrong one. Keys are compared as SHA-256 digests with
`hmac.compare_digest` against every configured key, so timing tells nothing about a key's content, and
neither keys nor the presented value are ever logged.

Keys rotate without a restart: on SIGHUP, and whenever the key file changes (checked every
`SERVE_API_KEYS_RELOAD_S`, so a Kubernetes Secret update needs no signal), `KeyReloader` reads the keys again
and swaps them in at once. A reload that fails or finds no key keeps the old keys and logs why: a broken
rotation never opens the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import signal
import threading
from collections.abc import Iterable
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.config import Settings
from service.errors import error_response
from service.limits import discard_body
from service.metrics import ServiceMetrics

logger = logging.getLogger(__name__)

# Route groups an operator may leave open; a path belongs to a group by exact path or by prefix ("/x/").
ROUTE_GROUPS: dict[str, tuple[str, ...]] = {
    "health": ("/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready"),
    "metrics": ("/metrics",),
    "docs": ("/docs", "/redoc", "/openapi.json", "/static/docs/"),
    "ui": ("/", "/ui/"),
}


class ApiKeyConfigError(ValueError):
    """The key file cannot be read or holds no key."""


def load_keys(inline: str, key_file: Path | None) -> tuple[str, ...]:
    """The configured keys: the comma-separated `inline` list plus the non-comment lines of `key_file`."""
    keys = [key.strip() for key in inline.split(",")]
    if key_file is not None:
        try:
            lines = key_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ApiKeyConfigError(f"cannot read SERVE_API_KEYS_FILE {key_file}: {exc.strerror}") from None
        keys.extend(line.strip() for line in lines if not line.lstrip().startswith("#"))
        if not any(keys):
            raise ApiKeyConfigError(f"SERVE_API_KEYS_FILE {key_file} holds no key")
    return tuple(dict.fromkeys(key for key in keys if key))


def presented_key(headers: Headers) -> str | None:
    """The key a request carries, from `Authorization: Bearer` first, else `X-API-Key`."""
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    api_key = headers.get("x-api-key", "").strip()
    return api_key or None


class KeyRing:
    """The configured keys as digests; `accepts` costs the same whichever key, if any, matches."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(key) for key in keys)

    def replace(self, keys: Iterable[str]) -> None:
        """Swap in a new set of keys (one assignment: a request sees the old set or the new one)."""
        self._digests = tuple(_digest(key) for key in keys)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def accepts(self, key: str) -> bool:
        candidate = _digest(key)
        matched = False
        for digest in self._digests:  # no early exit: every key is compared
            matched |= hmac.compare_digest(candidate, digest)
        return matched


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def is_open(path: str, groups: Iterable[str]) -> bool:
    for group in groups:
        for pattern in ROUTE_GROUPS[group]:
            if path == pattern or (pattern.endswith("/") and pattern != "/" and path.startswith(pattern)):
                return True
    return False


class ApiKeyMiddleware:
    """Pure ASGI: refuse requests without a valid key before the app reads a byte of their body."""

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyRing,
        open_groups: tuple[str, ...],
        metrics: ServiceMetrics,
        max_body_bytes: int = 20 * 1024 * 1024,
    ) -> None:
        self.app = app
        self.keys = keys
        self.open_groups = open_groups
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys or is_open(scope["path"], self.open_groups):
            await self.app(scope, receive, send)
            return
        key = presented_key(Headers(scope=scope))
        if key is None:
            self.metrics.reject("unauthorized")
            detail = "this server needs an API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
            response = error_response(401, "unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})
        elif not self.keys.accepts(key):
            self.metrics.reject("forbidden")
            response = error_response(403, "forbidden", "the API key is not valid for this server")
        else:
            await self.app(scope, receive, send)
            return
        await discard_body(scope, receive, max_bytes=self.max_body_bytes)  # so the client gets the answer
        await response(scope, receive, send)


def install_auth(app: Starlette, settings: Settings, metrics: ServiceMetrics) -> KeyRing:
    """Add `ApiKeyMiddleware` when keys are configured; a bad key file raises `ApiKeyConfigError` here."""
    keys = KeyRing(load_keys(settings.api_keys.get_secret_value(), settings.api_keys_file))
    if not keys and not is_loopback(settings.host):
        logger.warning(
            "no API keys and listening on %s, beyond this machine: anyone who can reach the port may use every "
            "route; set SERVE_API_KEYS_FILE (or SERVE_API_KEYS), or SERVE_HOST=127.0.0.1 behind a proxy",
            settings.host,
        )
    if keys:
        app.add_middleware(
            ApiKeyMiddleware,
            keys=keys,
            open_groups=settings.auth_open_routes,
            metrics=metrics,
            max_body_bytes=settings.max_body_bytes,
        )
        logger.info("API keys required (%d configured); open route groups: %s", len(keys), settings.auth_open_routes)
    return keys


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the port on this machine (`localhost`, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


class KeyReloader:
    """Read the keys again on SIGHUP and when the key file changes; a failed reload keeps the old keys."""

    def __init__(self, keys: KeyRing, settings: Settings) -> None:
        self.keys = keys
        self.inline = settings.api_keys.get_secret_value()
        self.key_file = settings.api_keys_file
        self.interval_s = settings.api_keys_reload_s
        self._stamp = _file_stamp(self.key_file)
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def reload(self, why: str) -> bool:
        """Swap in the keys read now; False (old keys kept, reason logged) when that fails or finds none."""
        self._stamp = _file_stamp(self.key_file)
        try:
            keys = load_keys(self.inline, self.key_file)
        except ApiKeyConfigError as exc:
            logger.error("API keys not reloaded (%s): %s; the previous %d keys stay", why, exc, len(self.keys))
            return False
        if not keys:
            logger.error("API keys not reloaded (%s): none found; the previous %d keys stay", why, len(self.keys))
            return False
        self.keys.replace(keys)
        logger.info("API keys reloaded (%s): %d configured", why, len(self.keys))
        return True

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGHUP (main thread only) and, with a key file, a check for changes every `interval_s`."""
        if not self.keys:
            return
        self._loop = loop
        if threading.current_thread() is threading.main_thread():
            loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")
        if self.key_file is not None and self.interval_s > 0:
            self._task = loop.create_task(self._watch())

    async def stop(self) -> None:
        if self._loop is not None and threading.current_thread() is threading.main_thread():
            self._loop.remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if _file_stamp(self.key_file) != self._stamp:
                self.reload("key file changed")


def _file_stamp(path: Path | None) -> tuple[int, int, int] | None:
    """What changes when a file is rewritten or replaced (a Secret volume swaps a symlink): inode, size, mtime."""
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns
