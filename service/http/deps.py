"""FastAPI dependencies: what a route needs from the app (built once in build_app and
its lifespan) and from the request headers (API key, deadline, request id)."""

from __future__ import annotations

import hmac
import math
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import Request

from service.config import Settings
from service.engine.errors import Unavailable
from service.engine.protocol import EngineClient
from service.engine.registry import ModelRegistry
from service.engine.request import TaskInput
from service.http.errors import ApiError
from service.http.logs import request_id_var
from service.http.state import ServerState
from service.metrics import Metrics

TIMEOUT_HEADER = "X-Request-Timeout"


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def get_server_state(request: Request) -> ServerState:
    return request.app.state.server


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return request.headers.get("x-api-key")


def key_accepted(presented: str | None, keys: list[str]) -> bool:
    """Constant-time comparison against every configured key."""
    if presented is None:
        return False
    given = presented.encode()
    ok = False
    for key in keys:
        ok |= hmac.compare_digest(given, key.encode())
    return ok


async def require_api_key(request: Request) -> None:
    """401 unless a configured key is presented as `Authorization: Bearer KEY` or
    `X-API-Key: KEY`. No keys configured: authentication is off. Keys are read per
    request, so rotating `settings.api_keys` takes effect at once."""
    keys = get_settings(request).api_key_values()
    if not keys:
        return
    presented = presented_key(request)
    if not key_accepted(presented, keys):
        message = "missing API key" if presented is None else "invalid API key"
        raise ApiError(401, "unauthenticated", message,
                       headers={"WWW-Authenticate": 'Bearer realm="sora"'})


@dataclass(frozen=True)
class CallContext:
    """Per-request facts the task routes pass to the engine."""

    request_id: str
    timeout: float | None  # seconds, from the header; None: not given


async def call_context(request: Request) -> CallContext:
    raw = request.headers.get(TIMEOUT_HEADER)
    timeout = None
    if raw is not None:
        try:
            timeout = float(raw)
        except ValueError:
            timeout = math.nan
        if not math.isfinite(timeout) or timeout <= 0:
            raise ApiError(400, "invalid_argument",
                           f"{TIMEOUT_HEADER} must be a positive number of seconds",
                           field=TIMEOUT_HEADER)
    return CallContext(request_id=request_id_var.get(), timeout=timeout)


def serving_registry(request: Request) -> ModelRegistry:
    """The registry, or 503 while the server loads or drains."""
    if get_server_state(request).draining:
        raise Unavailable("server is shutting down; retry on another instance")
    registry = get_registry(request)
    if not registry.engines():
        raise Unavailable("models are still loading")
    return registry


def resolve_engine(
    request: Request, model: str | None, inputs: Sequence[TaskInput]
) -> EngineClient:
    """The engine that serves `inputs` (`model`, or the one routing picks: see
    service/engine/routing.py); 503 while the server loads or drains, 404 for an
    unknown model, 400 for a task or language no model serves."""
    return serving_registry(request).route(inputs, model)
