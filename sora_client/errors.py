"""Exceptions raised by the client, one class per stable error code of the API.

Both front ends send the same codes: REST in `{"error": {"code", "message", "field"}}`,
gRPC in the `sora-error-code` / `sora-error-field` / `retry-after` trailing metadata.
Where a reply carries no code (a proxy's 502, a refused connection), the HTTP status or
gRPC status code picks the class.
"""

from __future__ import annotations

from typing import Any


class SoraError(Exception):
    """Base class. `code` is the API's stable error code, `field` the request field at
    fault (`texts[1]`, `options.top_p`), `status` the HTTP status or gRPC status name,
    `retry_after` the seconds the server asked to wait (429/503)."""

    code = "internal"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        status: int | str | None = None,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or type(self).code
        self.field = field
        self.status = status
        self.retry_after = retry_after
        self.request_id = request_id

    def __str__(self) -> str:
        where = f" [{self.status}]" if self.status is not None else ""
        return f"{self.code}{where}: {self.message}"


class InvalidArgument(SoraError):
    """The request is wrong; `field` names the culprit. Retrying will not help."""

    code = "invalid_argument"


class Unauthenticated(SoraError):
    code = "unauthenticated"


class PermissionDenied(SoraError):
    code = "permission_denied"


class NotFound(SoraError):
    """Unknown model or version (or route)."""

    code = "not_found"


class Overloaded(SoraError):
    """The server's queue is full (HTTP 429, RESOURCE_EXHAUSTED); retried by default."""

    code = "overloaded"


class Unavailable(SoraError):
    """The server is loading, draining or unreachable (HTTP 503, UNAVAILABLE); retried
    by default."""

    code = "unavailable"


class DeadlineExceeded(SoraError):
    """The deadline passed, on the server (HTTP 504) or in the client."""

    code = "deadline_exceeded"


class Cancelled(SoraError):
    code = "cancelled"


class ServerError(SoraError):
    """The server failed for this request (HTTP 5xx, INTERNAL)."""

    code = "internal"


_BY_CODE: dict[str, type[SoraError]] = {
    "invalid_argument": InvalidArgument, "input_too_long": InvalidArgument,
    "invalid_json": InvalidArgument, "unsupported_media_type": InvalidArgument,
    "payload_too_large": InvalidArgument, "method_not_allowed": InvalidArgument,
    "unauthenticated": Unauthenticated, "permission_denied": PermissionDenied,
    "not_found": NotFound, "overloaded": Overloaded, "unavailable": Unavailable,
    "deadline_exceeded": DeadlineExceeded, "cancelled": Cancelled,
    "execution_error": ServerError, "internal": ServerError,
}
_BY_HTTP_STATUS: dict[int, type[SoraError]] = {
    401: Unauthenticated, 403: PermissionDenied, 404: NotFound, 429: Overloaded,
    499: Cancelled, 503: Unavailable, 504: DeadlineExceeded,
}
_BY_GRPC_STATUS: dict[str, type[SoraError]] = {
    "INVALID_ARGUMENT": InvalidArgument, "OUT_OF_RANGE": InvalidArgument,
    "UNAUTHENTICATED": Unauthenticated, "PERMISSION_DENIED": PermissionDenied,
    "NOT_FOUND": NotFound, "UNIMPLEMENTED": NotFound,
    "RESOURCE_EXHAUSTED": Overloaded, "UNAVAILABLE": Unavailable,
    "DEADLINE_EXCEEDED": DeadlineExceeded, "CANCELLED": Cancelled,
}


def error_class(code: str | None, status: int | str | None) -> type[SoraError]:
    if code in _BY_CODE:
        return _BY_CODE[code]
    if isinstance(status, int):
        if status in _BY_HTTP_STATUS:
            return _BY_HTTP_STATUS[status]
        return InvalidArgument if 400 <= status < 500 else ServerError
    return _BY_GRPC_STATUS.get(status or "", ServerError)


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None  # an HTTP-date Retry-After: fall back to the client's backoff
    return seconds if seconds >= 0 else None


def from_http(
    status: int | None, body: Any, headers: Any, request_id: str | None = None
) -> SoraError:
    """The exception for an HTTP error reply (`headers` is a case-insensitive mapping)."""
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        code, message, field = detail.get("code"), detail.get("message"), detail.get("field")
    else:  # not our error shape: a proxy or load balancer answered
        code, message, field = None, f"HTTP {status}: not an API error reply", None
    cls = error_class(code, status)
    return cls(
        str(message), code=code, field=field, status=status,
        retry_after=_seconds(headers.get("retry-after")), request_id=request_id,
    )


def from_grpc(error: Any) -> SoraError:
    """The exception for a failed gRPC call (a `grpc.RpcError` / `grpc.aio.AioRpcError`)."""
    status = error.code().name if error.code() is not None else "UNKNOWN"
    trailers = dict(error.trailing_metadata() or ())
    code = trailers.get("sora-error-code")
    cls = error_class(code, status)
    return cls(
        error.details() or status, code=code, field=trailers.get("sora-error-field"),
        status=status, retry_after=_seconds(trailers.get("retry-after")),
    )
