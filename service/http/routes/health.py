"""Kubernetes-style probes, open without an API key.

/health/live: the process answers (200 while serving, loading and draining), and 503
while a model's engine-core process is dead (the registry tries to replace it; if it
cannot, liveness keeps failing and the orchestrator restarts the server).
/health/ready: 200 only when every model is warm and the server is not draining;
otherwise 503 with Retry-After, so a load balancer stops sending traffic at once. Ready
does not wait for compiling (compile=background): its body says, per model, whether the
compiled steps are in use yet (`compile`: compiled | compiling | off | failed).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.http.deps import get_registry, get_server_state
from service.http.errors import UNAVAILABLE_RETRY_AFTER_S, error_body
from service.http.schemas import ErrorResponse, Health

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live", response_model=Health, response_model_exclude_none=True,
            responses={503: {"model": ErrorResponse}})
async def live(request: Request) -> JSONResponse | Health:
    dead = [] if get_server_state(request).draining else get_registry(request).stopped()
    if not dead:
        return Health(status="alive")
    return JSONResponse(
        error_body("unavailable", f"the engine of {', '.join(dead)} has stopped"),
        status_code=503,
    )


@router.get("/ready", response_model=Health, response_model_exclude_none=True,
            responses={503: {"model": ErrorResponse}})
async def ready(request: Request) -> JSONResponse | Health:
    if get_server_state(request).draining:
        reason = "server is shutting down"
    elif dead := get_registry(request).stopped():
        reason = f"the engine of {', '.join(dead)} has stopped"
    elif not get_registry(request).ready:
        reason = "models are loading or warming up"
    else:
        engines = get_registry(request).engines()
        return Health(status="ready", compile={e.name: e.compile_state.value for e in engines})
    return JSONResponse(
        error_body("unavailable", reason), status_code=503,
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
    )
