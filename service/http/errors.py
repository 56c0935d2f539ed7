"""One error shape for every failure: `{"error": {"code", "message", "field"?}}`.

Engine errors map to HTTP statuses here; FastAPI's validation errors and Starlette's
HTTP exceptions (404 route, 405 method, 413 body) are rendered in the same shape, so
a client parses one format. Bad input is never a 500.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.engine.errors import (
    Cancelled,
    DeadlineExceeded,
    EngineError,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    Unavailable,
)
from service.metrics import Metrics

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499  # nginx's code: the client went away before the answer
UNAVAILABLE_RETRY_AFTER_S = 1
TASK_PATHS = {"/v1/translate": "translate", "/v1/summarize": "summarize", "/v1/answer": "answer"}
_HTTP_CODES = {
    400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied",
    404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
    415: "unsupported_media_type", 429: "overloaded", 503: "unavailable",
}


class ApiError(Exception):
    """An error with its HTTP status; raised by routes and dependencies."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if field:
        err["field"] = field
    return {"error": err}


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(error.code, error.message, error.field),
        status_code=error.status,
        headers=error.headers,
    )


def from_engine_error(e: EngineError, field: str | None = None) -> ApiError:
    """The HTTP form of an engine error; `field` overrides the engine's field name."""
    field = field or e.field
    if isinstance(e, InvalidRequest):
        return ApiError(400, e.code, e.message, field=field)
    if isinstance(e, Overloaded):
        retry = str(max(1, math.ceil(e.retry_after)))
        return ApiError(429, e.code, e.message, headers={"Retry-After": retry})
    if isinstance(e, Unavailable):
        return ApiError(503, e.code, e.message,
                        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})
    if isinstance(e, ModelNotFound):
        return ApiError(404, e.code, e.message, field=field)
    if isinstance(e, DeadlineExceeded):
        return ApiError(504, e.code, e.message)
    if isinstance(e, Cancelled):
        return ApiError(CLIENT_CLOSED_REQUEST, e.code, e.message)
    return ApiError(500, e.code, e.message)


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """("body", "options", "temperature") -> "options.temperature";
    ("body", "texts", 2) -> "texts[2]"."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def validation_error(exc: RequestValidationError) -> ApiError:
    errors = list(exc.errors())
    if not errors:
        return ApiError(422, "invalid_argument", "invalid request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        where = f" at position {first['loc'][1]}" if len(first.get("loc", ())) > 1 else ""
        detail = ctx.get("error", "")
        return ApiError(400, "invalid_json", f"malformed JSON body{where}: {detail}".rstrip(": "))
    field = field_path(first.get("loc", ()))
    msg = first.get("msg", "invalid value")
    if first.get("type") == "missing":
        msg = "field required" if field else "a JSON request body is required"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    message = f"{field}: {msg}{more}" if field else f"{msg}{more}"
    return ApiError(422, "invalid_argument", message, field=field or None)


def install_error_handlers(app: FastAPI) -> None:
    metrics: Metrics = app.state.metrics

    def rejected(request: Request, code: str) -> None:
        """Count a task call refused before the engine accepted it (the engine counts
        accepted ones when they finish)."""
        task = TASK_PATHS.get(request.url.path)
        if task is not None and not getattr(request.state, "accepted", False):
            metrics.request_rejected(getattr(request.state, "model", None), task, "http", code)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        rejected(request, exc.code)
        return error_response(exc)

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, exc: EngineError) -> JSONResponse:
        rejected(request, exc.code)
        return error_response(from_engine_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        error = validation_error(exc)
        rejected(request, error.code)
        return error_response(error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        rejected(request, code)
        return JSONResponse(
            error_body(code, message), status_code=exc.status_code, headers=exc.headers
        )
