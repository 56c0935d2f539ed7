"""Engine errors as gRPC statuses: one table, used by the servicer and the auth check.

The status details name the offending field first (`texts[1]: ...`), and the trailing
metadata carries what a client may act on: `retry-after` (seconds, RESOURCE_EXHAUSTED),
`sora-error-code` (the engine's stable code) and `sora-error-field` (the field path).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import grpc

from service.engine.errors import EngineError, Overloaded

STATUS_FOR_CODE: dict[str, grpc.StatusCode] = {
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "input_too_long": grpc.StatusCode.INVALID_ARGUMENT,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "overloaded": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "deadline_exceeded": grpc.StatusCode.DEADLINE_EXCEEDED,
    "cancelled": grpc.StatusCode.CANCELLED,
    "execution_error": grpc.StatusCode.INTERNAL,
    "internal": grpc.StatusCode.INTERNAL,
}

RETRY_AFTER = "retry-after"
ERROR_CODE = "sora-error-code"
ERROR_FIELD = "sora-error-field"


@dataclass(frozen=True)
class GrpcError:
    """A status ready for `context.abort(code, details, trailing_metadata)`."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str], ...]


def to_grpc(error: EngineError, field: str | None = None) -> GrpcError:
    """The status for `error`. `field` is the request field's path (`texts[2]`,
    `options.top_p`); it defaults to the engine's own field name."""
    field = field or error.field
    details = error.message
    if field and not details.startswith(f"{field}:"):
        details = f"{field}: {details}"
    metadata: list[tuple[str, str]] = [(ERROR_CODE, error.code)]
    if field:
        metadata.append((ERROR_FIELD, field))
    if isinstance(error, Overloaded):
        metadata.append((RETRY_AFTER, str(max(1, math.ceil(error.retry_after)))))
    code = STATUS_FOR_CODE.get(error.code, grpc.StatusCode.INTERNAL)
    return GrpcError(code, details, tuple(metadata))
