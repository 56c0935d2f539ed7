"""A Python client for Sora's REST and gRPC APIs.

    from sora_client import Client
    with Client("http://localhost:8000") as sora:      # or "grpc://localhost:50051"
        print(sora.translate("Hello world", "de").text)

Needs only httpx, grpcio and protobuf (`pip install "sora[client]"`): it imports
neither torch nor the server.
"""

from sora_client.client import AsyncClient, Client
from sora_client.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
    ServerError,
    SoraError,
    Unauthenticated,
    Unavailable,
)
from sora_client.retry import NO_RETRIES, RetryPolicy
from sora_client.types import (
    Candidate,
    DecodingOptions,
    DetectedLanguage,
    ModelCard,
    Result,
    StreamPiece,
    TaskResult,
    Usage,
)

__all__ = [
    "NO_RETRIES", "AsyncClient", "Cancelled", "Candidate", "Client", "DeadlineExceeded",
    "DecodingOptions", "DetectedLanguage",
    "InvalidArgument", "ModelCard", "NotFound", "Overloaded", "PermissionDenied", "Result",
    "RetryPolicy", "ServerError", "SoraError", "StreamPiece", "TaskResult", "Unauthenticated",
    "Unavailable", "Usage",
]
