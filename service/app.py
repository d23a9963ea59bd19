"""`create_app(settings)`: the FastAPI application, with model loading and warm-up in its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import api_router
from service.auth import install_auth
from service.batching import MicroBatcher
from service.config import Settings
from service.docs import install_docs
from service.errors import install_error_handlers
from service.limits import BodyLimitMiddleware
from service.metrics import RequestMetricsMiddleware, ServiceMetrics
from service.model import LoadedModel, load_model
from service.request_context import RequestContextMiddleware
from service.runtime import Runtime
from service.ui import ui_router

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; the model is loaded when the server starts it, not here."""
    settings = settings or Settings()
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A missing file, a bad record or an unavailable provider raises here, so the server
        # refuses to start instead of serving errors.
        model = load_model(
            settings.model_path, provider=settings.provider, intra_op_threads=settings.intra_op_threads
        )
        _log_model(model)
        batcher = MicroBatcher(
            model.predict,
            max_batch_size=settings.max_batch_size,
            max_batch_delay_s=settings.max_batch_delay_ms / 1e3,
            queue_limit=settings.queue_limit,
            warm_up=model.warm_up,
            on_batch=metrics.observe_batch,
        )
        record = model.record
        metrics.set_model_info(
            name=record.name, version=record.version, provider=model.provider, variant=record.variant
        )
        metrics.track_queue_depth(lambda: batcher.depth)
        decoder = ThreadPoolExecutor(max_workers=settings.decode_workers, thread_name_prefix="decode")
        # Warm-up runs as the worker's first job: /health/live answers at once, /health/ready after it.
        batcher.start()
        app.state.runtime = Runtime(model=model, batcher=batcher, decoder=decoder)
        try:
            yield
        finally:
            batcher.close()
            decoder.shutdown(wait=False, cancel_futures=True)
            logger.info("inference worker stopped")

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
    install_auth(app, settings, metrics)  # before any body is read
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)  # also counts 401s and 413s
    app.add_middleware(RequestContextMiddleware)  # outermost: request id and access log for everything
    return app


def _log_model(model: LoadedModel) -> None:
    record = model.record
    logger.info(
        "serving model %s version %s (%s) on %s: labels %s, input [N, %d, %d, %d]",
        record.name,
        record.version,
        record.task,
        model.provider,
        list(record.labels),
        *model.input_shape,
    )
