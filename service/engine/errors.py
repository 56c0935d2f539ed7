"""Errors the engine reports to callers; front ends map `code` to their protocol."""

from __future__ import annotations


class EngineError(Exception):
    """Base class. `code` is stable and low-cardinality (used as a metric label)."""

    code = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRequest(EngineError):
    code = "invalid_argument"


class InputTooLong(InvalidRequest):
    code = "input_too_long"


class Overloaded(EngineError):
    code = "overloaded"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(EngineError):
    """Not ready yet (warming up) or draining."""

    code = "unavailable"


class ModelNotFound(EngineError):
    code = "not_found"


class DeadlineExceeded(EngineError):
    code = "deadline_exceeded"


class Cancelled(EngineError):
    code = "cancelled"


class ExecutionError(EngineError):
    """The model step failed for this request (non-finite logits, out of memory, ...)."""

    code = "execution_error"


def error_from_code(
    code: str, message: str, field: str | None = None, retry_after: float | None = None
) -> EngineError:
    """The error a stable `code` names (as sent by an engine-core process)."""
    if code == Overloaded.code:
        return Overloaded(message, retry_after=retry_after or 1.0)
    classes = (InvalidRequest, InputTooLong, Unavailable, ModelNotFound, DeadlineExceeded,
               Cancelled, ExecutionError)
    cls = next((c for c in classes if c.code == code), EngineError)
    return cls(message, field=field)
