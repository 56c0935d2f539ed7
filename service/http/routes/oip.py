"""The Open Inference Protocol (KServe v2) REST endpoints under /v2, over the same
registry as /v1:

    GET  /v2                                        server metadata
    GET  /v2/health/live, /v2/health/ready          probes (open without an API key)
    GET  /v2/models/{name}[/versions/{v}]           model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready     200 ready, 503 not (yet), 404 unknown
    POST /v2/models/{name}[/versions/{v}]/infer     inference

Errors are the protocol's `{"error": "message"}` (not the /v1 shape), with 400 for bad
input, 401 without a valid key, 404 for an unknown model or version, 429 (Retry-After)
when overloaded and 503 (Retry-After) while loading or draining.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.engine.errors import EngineError, Unavailable
from service.engine.protocol import EngineClient
from service.http.deps import (
    CallContext,
    call_context,
    get_metrics,
    get_registry,
    get_server_state,
    get_settings,
    require_api_key,
)
from service.http.errors import (
    CLIENT_CLOSED_REQUEST,
    UNAVAILABLE_RETRY_AFTER_S,
    ApiError,
    from_engine_error,
    validation_error,
)
from service.http.jobs import ClientDisconnected, wait_all
from service.oip import PROTOCOL_HTTP
from service.oip.infer import make_plan, oip_error, output_tensors, submit, task_label
from service.oip.metadata import model_metadata, server_metadata
from service.oip.rest import (
    HEADER_LENGTH,
    encode_infer_response,
    model_metadata_json,
    parse_infer_request,
    server_metadata_json,
)

RETRY = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)}


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class OipRoute(APIRoute):
    """Renders every failure of these routes, dependencies included (API key, headers,
    body size), in the protocol's error shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as e:
                return error_response(e.status, e.message, e.headers)
            except EngineError as e:
                api = from_engine_error(e)
                return error_response(api.status, oip_error(e).message, api.headers)
            except RequestValidationError as e:
                return error_response(400, validation_error(e).message)
            except StarletteHTTPException as e:
                return error_response(e.status_code, str(e.detail), dict(e.headers or {}))

        return route


open_router = APIRouter(prefix="/v2", tags=["open inference protocol"], route_class=OipRoute)
router = APIRouter(prefix="/v2", tags=["open inference protocol"], route_class=OipRoute,
                   dependencies=[Depends(require_api_key)])


def _serving(request: Request) -> str | None:
    """Why the server is not ready, or None when it is."""
    if get_server_state(request).draining:
        return "server is shutting down"
    if not get_registry(request).ready:
        return "models are loading or warming up"
    return None


def _engine(request: Request, name: str, version: str | None) -> EngineClient:
    registry = get_registry(request)
    if not registry.engines():
        raise Unavailable("models are still loading")
    return registry.get(name, version)


# -- health (open) ---------------------------------------------------------------------


@open_router.get("/health/live")
async def live() -> dict[str, bool]:
    """200 while the process serves (also while loading and draining)."""
    return {"live": True}


@open_router.get("/health/ready", response_model=None)
async def ready(request: Request) -> JSONResponse | dict[str, bool]:
    """200 when every model is warm and the server is not draining, else 503."""
    reason = _serving(request)
    if reason is not None:
        return error_response(503, reason, RETRY)
    return {"ready": True}


# -- metadata --------------------------------------------------------------------------


@router.get("")
async def metadata() -> dict[str, Any]:
    """Server name, version and protocol extensions."""
    return server_metadata_json(server_metadata())


@router.get("/models/{name}")
@router.get("/models/{name}/versions/{version}")
async def model(request: Request, name: str, version: str | None = None) -> dict[str, Any]:
    """Versions, platform and the input/output tensors (-1: any size)."""
    return model_metadata_json(model_metadata(_engine(request, name, version)))


@router.get("/models/{name}/ready", response_model=None)
@router.get("/models/{name}/versions/{version}/ready", response_model=None)
async def model_ready(
    request: Request, name: str, version: str | None = None
) -> JSONResponse | dict[str, Any]:
    engine = _engine(request, name, version)
    reason = _serving(request) if engine.ready else f"model {name} is {engine.state.value}"
    if reason is not None:
        return error_response(503, reason, RETRY)
    return {"name": engine.name, "ready": True}


# -- inference -------------------------------------------------------------------------


def _timeout(ctx: CallContext, requested: float | None, request: Request) -> float | None:
    given = [t for t in (ctx.timeout, requested) if t is not None]
    return min(given) if given else get_settings(request).request_timeout_s


@router.post("/models/{name}/infer")
@router.post("/models/{name}/versions/{version}/infer")
async def infer(
    request: Request, name: str, version: str | None = None,
    ctx: CallContext = Depends(call_context),
) -> Response:
    """Run the model on BYTES tensor `text` (see the model metadata for every input)."""
    metrics = get_metrics(request)
    engine: EngineClient | None = None
    task = "unknown"
    try:
        if get_server_state(request).draining:
            raise Unavailable("server is shutting down; retry on another instance")
        engine = _engine(request, name, version)
        rest = parse_infer_request(await request.body(), request.headers.get(HEADER_LENGTH),
                                   name, version)
        task = task_label(rest.request)
        plan = make_plan(rest.request, engine,
                         max_texts=get_settings(request).max_batch_texts)
        get_registry(request).route(plan.inputs, engine.name, engine.version)
        jobs = submit(engine, plan, protocol=PROTOCOL_HTTP,
                      request_id=rest.request.id or ctx.request_id,
                      timeout=_timeout(ctx, plan.timeout, request))
    except EngineError as e:
        metrics.request_rejected(engine.name if engine else None, task, PROTOCOL_HTTP, e.code)
        raise
    try:
        completions = await wait_all(request, jobs)  # cancels the jobs on a disconnect
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    body, header_length = encode_infer_response(rest, engine.name, engine.version,
                                                output_tensors(plan, completions))
    if header_length is None:
        return Response(body, media_type="application/json")
    return Response(body, media_type="application/octet-stream",
                    headers={HEADER_LENGTH: str(header_length)})


# Anything else under /v2 is a 404 in the protocol's shape, not the /v1 one.
@open_router.api_route("/{path:path}", methods=["GET", "POST"], include_in_schema=False)
async def unknown(request: Request, path: str) -> JSONResponse:
    return error_response(404, f"no route {request.method} {request.url.path}")
