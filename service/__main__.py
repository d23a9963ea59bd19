"""`python -m service`: read the `SERVE_*` settings and run uvicorn; `--help` lists them, `--check` tests them.

`--check` runs the app's own start-up (model loading and warm-up) without opening a port, asks the app's
readiness probe, and exits 0 or 1 with one line saying why. Bad settings, a bad key file or TLS half
configured end in one line on stderr and a non-zero exit, before anything starts.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import socket
import sys
import time
from typing import Any, Literal, get_args, get_origin

from pydantic import SecretStr, ValidationError
from pydantic_core import PydanticUndefined

from service.config import Settings

CHECK_TIMEOUT_S = 300.0
EXIT_BAD_SETTINGS = 2


def settings_table() -> str:
    """One line per setting: name, environment variable, default, description."""
    rows = [("setting", "environment variable", "default", "description")]
    prefix = str(Settings.model_config.get("env_prefix", ""))
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, SecretStr):
            shown = "(empty)" if not default.get_secret_value() else "(set)"
        elif default is PydanticUndefined or default is None:
            shown = "-"
        elif isinstance(default, tuple):
            shown = ",".join(map(str, default))
        else:
            shown = str(default)
        description = field.description or ""
        if get_origin(field.annotation) is Literal:
            description = f"{description}; one of {', '.join(map(str, get_args(field.annotation)))}".lstrip("; ")
        rows.append((name, f"{prefix}{name}".upper(), shown, description))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return "\n".join(
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}".rstrip() for row in rows
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve the exported models over HTTP. Every setting is a SERVE_* environment variable:",
        epilog=settings_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--check", action="store_true", help="load the models, run warm-up, print one line and exit 0 (ok) or 1"
    )
    return parser.parse_args(argv)


def load_settings() -> Settings:
    """The settings from the environment; invalid ones exit with one line naming each variable."""
    try:
        return Settings()
    except ValidationError as exc:
        prefix = str(Settings.model_config.get("env_prefix", ""))
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            problems.append(f"{prefix}{field.upper()} ({field}): {error['msg']}")
        raise SystemExit(f"invalid SERVE_* settings: {'; '.join(problems)}") from None


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's own limits and TLS from the settings; logging stays ours (`service.logs`)."""
    from service.http_protocol import bounded_protocol  # imports uvicorn: not for --help

    if (settings.ssl_certfile is None) != (settings.ssl_keyfile is None):
        raise SystemExit("invalid SERVE_* settings: set both SERVE_SSL_CERTFILE and SERVE_SSL_KEYFILE, or neither")
    return {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "log_level": settings.log_level,
        "access_log": False,  # RequestContextMiddleware writes the access line
        "server_header": False,
        # httptools (C) with a head limit: h11, the parser whose head limit uvicorn exposes, costs far more CPU.
        "http": bounded_protocol(settings.max_header_bytes),
        "limit_concurrency": settings.limit_concurrency,
        "timeout_keep_alive": settings.timeout_keep_alive_s,
        "ssl_certfile": str(settings.ssl_certfile) if settings.ssl_certfile else None,
        "ssl_keyfile": str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
    }


async def _asgi_get(app: Any, path: str) -> tuple[int, bytes]:
    """One GET through the ASGI app in this process (no socket): status and body."""
    messages: list[dict[str, Any]] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in messages if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


async def check(settings: Settings) -> tuple[bool, str]:
    """Start the app as the server would (models, warm-up), then ask its probes; (ok, one-line reason)."""
    from service.app import create_app

    try:
        app = create_app(settings)
        app.state.check_only = True  # the DICOM node is checked, not started (a running service may hold it)
        async with app.router.lifespan_context(app):
            deadline = time.monotonic() + CHECK_TIMEOUT_S
            while True:
                status, body = await _asgi_get(app, "/health/ready")
                if status == 200:
                    return True, f"ok: {await _describe_models(app)} loaded and warmed up"
                live_status, live_body = await _asgi_get(app, "/health/live")
                if live_status != 200:
                    return False, f"failed: {_detail(live_body)}"
                if time.monotonic() > deadline:
                    return False, f"failed: not ready after {CHECK_TIMEOUT_S:.0f} s: {_detail(body)}"
                await asyncio.sleep(0.05)
    except Exception as exc:  # a bad key file, or a model that cannot load (raised out of the lifespan)
        return False, f"failed: {type(exc).__name__}: {' '.join(str(exc).split())}"


async def _describe_models(app: Any) -> str:
    status, body = await _asgi_get(app, "/v1/models")
    if status == 200:
        models = json.loads(body).get("models", [])
        names = [f"{m['name']} {m['version']} ({m.get('variant', '?')}, {m.get('provider', '?')})" for m in models]
        return f"{len(names)} model(s): {', '.join(names)}"
    status, body = await _asgi_get(app, "/model")
    record = json.loads(body) if status == 200 else {}
    return f"model {record.get('name', '?')} {record.get('version', '?')}"


def _detail(body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:200]
    return str(parsed.get("detail") or parsed.get("error") or parsed)


def check_port_free(host: str, port: int) -> None:
    """Exit with one line naming SERVE_PORT when the port is taken, instead of uvicorn's bare `[Errno 98]`."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                return  # uvicorn reports other bind errors itself
            raise SystemExit(
                f"port {port} on {host} is already in use: start on another one with SERVE_PORT "
                f"(SERVE_PORT={port + 1} make serve), or stop what holds it"
            ) from None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    settings = load_settings()
    from service.auth import ApiKeyConfigError
    from service.logs import configure_logging

    # --check says one line on stdout; its log (stderr) keeps only warnings unless SERVE_LOG_LEVEL asks for more.
    quiet = args.check and "log_level" not in settings.model_fields_set
    configure_logging("warning" if quiet else settings.log_level, settings.log_format)
    if args.check:
        ok, reason = asyncio.run(check(settings))
        print(reason)
        sys.exit(0 if ok else 1)
    options = uvicorn_options(settings)
    check_port_free(settings.host, settings.port)
    import uvicorn

    from service.app import create_app

    try:
        app = create_app(settings)
    except ApiKeyConfigError as exc:
        raise SystemExit(f"invalid SERVE_* settings: {exc}") from None
    uvicorn.run(app, **options)


if __name__ == "__main__":
    main()
