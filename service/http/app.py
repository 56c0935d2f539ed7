"""The REST front end: `build_app(settings, registry)` returns a FastAPI app whose
routes reach ONE ModelRegistry through `app.state`.

Given no registry, the app's lifespan builds one from the settings, loads it (warm-up)
and drains it at shutdown: enough to run under any ASGI server. `service.main` passes
its own registry instead, shared with the gRPC server, and owns its lifecycle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service import langdetect
from service.config import Settings
from service.engine.core_client import CoreOptions
from service.engine.registry import ModelRegistry
from service.http.errors import install_error_handlers
from service.http.middleware import BodyLimitMiddleware, RequestContextMiddleware
from service.http.routes import health, libretranslate, models, oip, tasks
from service.http.routes import metrics as metrics_route
from service.http.routes.playground import mount_playground
from service.http.state import ServerState
from service.metrics import Metrics

log = logging.getLogger(__name__)

API_DESCRIPTION = """Translate, summarize and answer with Sora encoder-decoder models.

Errors always have the shape `{"error": {"code", "message", "field"?}}`. Send the API key
as `Authorization: Bearer KEY` or `X-API-Key: KEY` (when the server has keys). A
deadline in seconds may be set with the `X-Request-Timeout` header or `options.timeout`.
"""


def new_registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(
        settings.model_repository,
        settings.engine_config(),
        default_model=settings.default_model,
        drain_timeout=settings.drain_timeout_s,
        core=CoreOptions(settings.torch_threads, settings.log_level, settings.log_format)
        if settings.engine_process else None,
    )


def build_app(
    settings: Settings,
    registry: ModelRegistry | None = None,
    *,
    metrics: Metrics | None = None,
    state: ServerState | None = None,
) -> FastAPI:
    """The app. With `registry` given, its owner loads and drains it; `metrics` given
    means the caller already registered it as the registry's listener."""
    state = state or ServerState()
    if metrics is None:
        metrics = Metrics()
        if registry is not None:
            registry.add_listener(metrics)
            metrics.bind(registry)
    owned = registry is None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            reg = new_registry(settings)
            reg.add_listener(app.state.metrics)
            app.state.metrics.bind(reg)
            app.state.registry = reg
            # Before the models: once they are ready, requests may need it.
            await asyncio.to_thread(langdetect.identifier)
            await reg.load_all()
        yield
        if owned:
            state.draining = True
            await app.state.registry.drain(settings.drain_timeout_s)

    app = FastAPI(
        title="Sora",
        version="1",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.server = state
    app.state.registry = registry
    install_error_handlers(app)
    # oip.open_router last: it ends with the catch-all 404 for unknown /v2 paths.
    for router in (tasks.router, libretranslate.router, models.router, health.router,
                   metrics_route.router, oip.router, oip.open_router):
        app.include_router(router)
    mount_playground(app)  # GET / and /playground/*
    # Added innermost first: requests pass RequestContext -> CORS -> BodyLimit -> routes,
    # so 413s and CORS answers carry the request id and are counted.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID",
                           "X-Request-Timeout"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app
