"""The grpc.aio server: the Sora service, the Open Inference Protocol service
(inference.GRPCInferenceService), grpc.health.v1, reflection and a graceful stop.

Health (both the overall "" service and "sora.v1.Sora") reads NOT_SERVING while the
models warm up or drain and SERVING once the registry is ready; `set_serving(False)`
holds it at NOT_SERVING (draining) whatever the registry says. Build it on the event
loop that will run it (`service/main.py` runs it beside uvicorn):

    grpc_server = build_grpc_server(registry, settings, metrics)
    await grpc_server.start()
    ...
    grpc_server.set_serving(False)          # load balancers stop sending new calls
    await registry.drain(settings.drain_timeout_s)
    await grpc_server.stop(grace=5.0)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from proto.inference import grpc_service_pb2_grpc
from proto.sora.v1 import sora_pb2, sora_pb2_grpc
from service.engine.registry import ModelRegistry
from service.grpc.auth import ApiKeyInterceptor
from service.grpc.oip_servicer import SERVICE_NAME as OIP_SERVICE_NAME
from service.grpc.oip_servicer import OipServicer, reflection_pool
from service.grpc.servicer import PROTOCOL, RejectionRecorder, SoraServicer

log = logging.getLogger(__name__)

SERVICE_NAME: str = sora_pb2.DESCRIPTOR.services_by_name["Sora"].full_name  # "sora.v1.Sora"
HEALTH_SERVICES = (health.OVERALL_HEALTH, SERVICE_NAME)
HEALTH_POLL_S = 0.5  # how often health follows registry readiness (warm-up, reloads)
MiB = 1 << 20
# rpc method -> the task label for rejected-call metrics
METHOD_TASKS = {
    "Translate": "translate", "Summarize": "summarize", "Answer": "answer",
    "GenerateStream": "generate_stream", "ListModels": "list_models",
}


def _setting(settings: Any, name: str, default: Any) -> Any:
    value = getattr(settings, name, default)
    return default if value is None and default is not None else value


def _api_keys(settings: Any) -> list[str]:
    keys = _setting(settings, "api_keys", [])
    return [k.get_secret_value() if hasattr(k, "get_secret_value") else str(k) for k in keys]


def server_credentials(settings: Any) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files, or None for plaintext. A client
    CA file turns on mTLS: clients must present a certificate it signed."""
    cert_file = _setting(settings, "tls_cert_file", None)
    key_file = _setting(settings, "tls_key_file", None)
    if cert_file is None and key_file is None:
        return None
    if cert_file is None or key_file is None:
        raise ValueError("tls_cert_file and tls_key_file must be set together")
    ca_file = _setting(settings, "tls_client_ca_file", None)
    ca = Path(ca_file).read_bytes() if ca_file is not None else None
    return grpc.ssl_server_credentials(
        [(Path(key_file).read_bytes(), Path(cert_file).read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


class GrpcServer:
    """A started-on-demand grpc.aio server bound at construction (`.port` is known
    before `start()`, also for port 0)."""

    def __init__(
        self,
        registry: ModelRegistry,
        settings: Any,
        metrics: RejectionRecorder | None = None,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        max_bytes = int(_setting(settings, "grpc_max_message_bytes", 4 * MiB))
        keys = _api_keys(settings)
        interceptors = [ApiKeyInterceptor(keys, self._auth_rejected)] if keys else []
        self.server: grpc.aio.Server = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", max_bytes),
                ("grpc.max_send_message_length", max_bytes),
            ],
        )
        self.servicer = SoraServicer(
            registry,
            max_batch_texts=int(_setting(settings, "max_batch_texts", 64)),
            default_timeout=_setting(settings, "request_timeout_s", None),
            metrics=metrics,
        )
        sora_pb2_grpc.add_SoraServicer_to_server(self.servicer, self.server)
        # The Open Inference Protocol (KServe v2 / Triton clients) over the same registry.
        self.oip_servicer = OipServicer(
            registry,
            serving=lambda: self.serving,
            max_batch_texts=int(_setting(settings, "max_batch_texts", 64)),
            default_timeout=_setting(settings, "request_timeout_s", None),
            metrics=metrics,
        )
        grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            self.oip_servicer, self.server
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflected = (SERVICE_NAME, OIP_SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(
            reflected, self.server, pool=reflection_pool(reflected)
        )
        host = _setting(settings, "host", "0.0.0.0")
        port = int(_setting(settings, "grpc_port", 50051))
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        credentials = server_credentials(settings)
        self.tls = credentials is not None
        if credentials is not None:
            self.port: int = self.server.add_secure_port(address, credentials)
        else:
            self.port = self.server.add_insecure_port(address)
        if not self.port:
            raise RuntimeError(f"could not bind the gRPC server to {address}")
        self.address = address
        self._accepting = True
        self._stopping = False
        self._health_changed = asyncio.Event()
        self._health_task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        await self.update_health()
        await self.server.start()
        self._health_task = asyncio.create_task(self._follow_registry(), name="grpc-health")
        log.info("gRPC server listening on %s (port %d, %s)", self.address, self.port,
                 "TLS" if self.tls else "plaintext")

    def set_serving(self, serving: bool) -> None:
        """Allow (True) or hold off (False: draining) SERVING. Health still reads
        NOT_SERVING while the registry is not ready. Applied on the event loop."""
        self._accepting = serving
        self._health_changed.set()

    @property
    def serving(self) -> bool:
        return self._accepting and not self._stopping and self.registry.ready

    async def update_health(self) -> None:
        """Publish the current serving state to the health service now."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in HEALTH_SERVICES:
            await self.health.set(service, status)

    async def _follow_registry(self) -> None:
        while True:
            await self.update_health()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._health_changed.wait(), HEALTH_POLL_S)
            self._health_changed.clear()

    async def stop(self, grace: float | None = 5.0) -> None:
        """Report NOT_SERVING, refuse new calls, give calls in flight `grace` seconds,
        then cancel what is left (their engine jobs are cancelled with them)."""
        self._stopping = True
        await self.health.enter_graceful_shutdown()
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
            self._health_task = None
        await self.server.stop(grace)
        log.info("gRPC server stopped")

    # -- metrics -----------------------------------------------------------------------

    def _auth_rejected(self, method: str) -> None:
        if self.metrics is None:
            return
        task = METHOD_TASKS.get(method.rsplit("/", 1)[-1], "unknown")
        try:
            self.metrics.request_rejected(None, task, PROTOCOL, "unauthenticated")
        except Exception:
            log.exception("metrics: recording a rejection failed")


def build_grpc_server(
    registry: ModelRegistry, settings: Any, metrics: RejectionRecorder | None = None
) -> GrpcServer:
    """The gRPC server for `registry`, configured by `settings` (service.config.Settings:
    host, grpc_port, api_keys, tls_*_file, grpc_max_message_bytes, max_batch_texts,
    request_timeout_s). Call on the event loop that will run it; then `await start()`."""
    return GrpcServer(registry, settings, metrics)
