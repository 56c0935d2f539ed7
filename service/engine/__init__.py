"""The inference engine: continuous batching of every front end's requests."""

from service.engine.config import EngineConfig
from service.engine.engine import Engine, EngineState, ModelInfo
from service.engine.errors import (
    Cancelled,
    DeadlineExceeded,
    EngineError,
    ExecutionError,
    InputTooLong,
    InvalidRequest,
    ModelNotFound,
    Overloaded,
    Unavailable,
)
from service.engine.request import Completion, Job, StreamDelta, TaskInput

__all__ = [
    "Cancelled", "Completion", "DeadlineExceeded", "Engine", "EngineConfig", "EngineError",
    "EngineState", "ExecutionError", "InputTooLong", "InvalidRequest", "Job", "ModelInfo",
    "ModelNotFound", "Overloaded", "StreamDelta", "TaskInput", "Unavailable",
]
