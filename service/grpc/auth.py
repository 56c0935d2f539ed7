"""API-key authentication for gRPC, as a server interceptor.

A call authenticates with `authorization: Bearer KEY` or `x-api-key: KEY` metadata.
Health checking and reflection stay open so load balancers and grpcurl-style tools
work without a key.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc

OPEN_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
    # Open Inference Protocol liveness/readiness, open like HTTP's /v2/health/*.
    "/inference.GRPCInferenceService/ServerLive",
    "/inference.GRPCInferenceService/ServerReady",
)
DENIED = "missing or invalid API key (send `authorization: Bearer KEY` or `x-api-key: KEY`)"


def presented_keys(metadata: Iterable[tuple[str, str | bytes]] | None) -> list[bytes]:
    """The API keys a call's metadata offers."""
    keys: list[bytes] = []
    for name, value in metadata or ():
        raw = value if isinstance(value, bytes) else value.encode()
        if name == "x-api-key":
            keys.append(raw.strip())
        elif name == "authorization":
            scheme, _, token = raw.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                keys.append(token.strip())
    return keys


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls to protected methods without a valid key (UNAUTHENTICATED)."""

    def __init__(
        self, keys: Sequence[str], on_reject: Callable[[str], None] | None = None
    ) -> None:
        if not keys:
            raise ValueError("ApiKeyInterceptor needs at least one key")
        self._keys = [k.encode() for k in keys]
        self._on_reject = on_reject  # called with the method name of each rejected call

    def authorized(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
        # compare_digest against every key: the time taken does not reveal which matched.
        matched = False
        for offered in presented_keys(metadata):
            for key in self._keys:
                matched |= hmac.compare_digest(offered, key)
        return matched

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method: str = handler_call_details.method
        if method.startswith(OPEN_METHOD_PREFIXES) or self.authorized(
            handler_call_details.invocation_metadata
        ):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:  # unknown method: let gRPC answer UNIMPLEMENTED
            return None
        if self._on_reject is not None:
            self._on_reject(method)
        return _deny(handler)


async def _abort(context: grpc.aio.ServicerContext) -> None:
    await context.abort(
        grpc.StatusCode.UNAUTHENTICATED, DENIED,
        trailing_metadata=(("sora-error-code", "unauthenticated"),),
    )


def _deny(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers UNAUTHENTICATED."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _abort(context)

    async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _abort(context)
        yield  # pragma: no cover (makes this an async generator)

    codec = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(stream, **codec)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **codec)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(stream, **codec)
    return grpc.unary_unary_rpc_method_handler(unary, **codec)
