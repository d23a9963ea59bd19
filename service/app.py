"""`create_app(settings)`: the FastAPI application, with model loading and warm-up in its lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.admission import Admission, AdmissionMiddleware
from service.api import api_router
from service.auth import KeyReloader, install_auth
from service.config import Settings
from service.cors import CorsPolicy
from service.docs import install_docs
from service.drain import Drain
from service.errors import install_error_handlers
from service.limits import BodyLimitMiddleware
from service.metrics import RequestMetricsMiddleware, ServiceMetrics
from service.model import LoadedModel
from service.registry import build_registry
from service.request_context import RequestContextMiddleware
from service.runtime import Runtime
from service.ui import ui_router

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the model is loaded when the server starts it, not here."""
    settings = settings or Settings()
    metrics = ServiceMetrics()
    admission = Admission(settings.max_pending)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A missing file, a bad record or an unavailable provider raises here, so the server
        # refuses to start instead of serving errors.
        registry = build_registry(settings, on_batch=metrics.observe_batch, on_decode=metrics.observe_decode)
        for served in registry.models:
            _log_model(served.model, default=served.is_default)
            metrics.set_model_info(
                name=served.name, version=served.version, provider=served.provider, variant=served.variant
            )
            if served.record.ood is not None:
                metrics.start_ood_counts(served.name, served.version)
        metrics.track_queue_depth(lambda: registry.depth)
        # Warm-up runs as each worker's first job: /health/live answers at once, /health/ready after it.
        registry.start()
        app.state.runtime = Runtime(registry=registry, admission=admission)
        app.state.dicom = None
        if settings.dicom_enabled:  # the C-STORE SCP, STOW-RS and the outbox, on the same registry and admission
            from service.dicom.lifespan import check_dicom, start_dicom

            if getattr(app.state, "check_only", False):  # --check: never bind the DICOM port or send the outbox
                check_dicom(settings, registry)
            else:
                app.state.dicom = await start_dicom(settings, registry, admission, metrics.registry)
        drain = Drain(admission, settings.drain_timeout_s)
        drain.install(asyncio.get_running_loop())  # SIGTERM: stop admitting, drain, then let uvicorn exit
        app.state.drain = drain
        key_reloader = KeyReloader(keys, settings)
        key_reloader.start(asyncio.get_running_loop())  # SIGHUP, or a changed key file: new keys, no restart
        try:
            yield
        finally:
            await key_reloader.stop()
            drain.uninstall()
            if app.state.dicom is not None:
                await app.state.dicom.stop(timeout_s=max(1.0, settings.drain_timeout_s))
            registry.close(timeout_s=max(1.0, settings.drain_timeout_s))
            logger.info("inference workers stopped")

    app = FastAPI(
        title="Medical imaging model service",
        summary="Classify one image per request with the exported model; not a certified medical device.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,  # service.docs serves /docs and /redoc from local files
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(api_router)
    app.include_router(ui_router)  # GET / (the web page), its assets, the model card
    install_docs(app, settings)
    app.add_middleware(BodyLimitMiddleware, limit_bytes=settings.max_body_bytes)
    app.add_middleware(  # before any body is parsed
        AdmissionMiddleware, admission=admission, on_reject=metrics.reject, max_body_bytes=settings.max_body_bytes
    )
    keys = install_auth(app, settings, metrics)  # before any body is parsed
    app.add_middleware(CorsPolicy, origins=settings.cors_origins)  # preflights carry no key: answered before auth
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # also counts 401s and 413s
    app.add_middleware(RequestContextMiddleware)  # outermost: request id and access log for everything
    return app


def _log_model(model: LoadedModel, *, default: bool) -> None:
    record = model.record
    logger.info(
        "serving model %s version %s%s (%s, %s) on %s: labels %s, input [N, %d, %d, %d]",
        record.name,
        record.version,
        " (default)" if default else "",
        record.task,
        record.variant,
        model.provider,
        list(record.labels),
        *model.input_shape,
    )
