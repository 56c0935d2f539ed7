"""`serve(settings)`: ONE model registry, served over HTTP (uvicorn) and gRPC (grpc.aio)
in the same event loop.

Start-up: both servers bind and start first (liveness answers, readiness says 503 /
NOT_SERVING), then every model loads and warms up, then readiness turns on. With
compile=background (the default) the models are compiled after that, while serving.

Shutdown on SIGTERM/SIGINT: readiness turns off at once (HTTP /health/ready 503, gRPC
health NOT_SERVING) and new requests get 503 / UNAVAILABLE; accepted requests finish
(up to `drain_timeout_s`) through `registry.drain`; then both servers stop and the
process exits 0. A second signal skips the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import uvicorn

from model.checkpoint import CheckpointError
from service import heap, langdetect
from service.config import Settings
from service.engine.errors import EngineError
from service.engine.registry import ModelRegistry
from service.http.app import build_app, new_registry
from service.http.logs import configure_logging
from service.http.state import ServerState
from service.metrics import Metrics

log = logging.getLogger(__name__)
GRPC_STOP_GRACE_S = 5.0  # for calls still streaming their last bytes after the drain


class StartupError(Exception):
    """The server cannot start (port in use, no models, ...); the message says why."""


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers: SoraServer decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise StartupError(f"cannot listen for HTTP on {host}:{port}: {e.strerror}") from None
    sock.set_inheritable(True)
    return sock


def use_compile_cache(directory: Path | None) -> None:
    """Point inductor's on-disk cache at `directory` (created if missing), in this
    process and the engine-core processes it starts (they inherit the environment)."""
    if directory is None:
        return
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StartupError(f"compile_cache_dir {directory}: {e.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StartupError(f"compile_cache_dir {directory} is not writable")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory.resolve())


def _import_grpc() -> Any:
    try:
        from service.grpc.server import build_grpc_server
    except ImportError as e:
        raise StartupError(
            f"the gRPC front end cannot be loaded ({e}); install sora[serve] and generate "
            "the stubs, or serve HTTP only with --no-grpc / SORA_GRPC_ENABLED=false"
        ) from None
    return build_grpc_server


class SoraServer:
    """Both front ends over one registry. `run()` serves until `request_stop()` (or a
    signal, under `serve()`), then drains and returns the exit code."""

    def __init__(self, settings: Settings, registry: ModelRegistry | None = None) -> None:
        self.settings = settings
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        self.metrics = Metrics()
        self.registry = registry or new_registry(settings)
        self.registry.add_listener(self.metrics)
        self.metrics.bind(self.registry)
        self.state = ServerState()
        self.app = build_app(settings, self.registry, metrics=self.metrics, state=self.state)
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self.grpc: Any = None
        self.ready = threading.Event()  # set once models are warm (for other threads)
        self.stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._force: asyncio.Event | None = None

    # -- control (any thread) ----------------------------------------------------------

    def request_stop(self) -> None:
        """Begin the graceful shutdown; a second call skips waiting for requests."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._on_stop)

    def _on_stop(self) -> None:
        assert self._stop is not None and self._force is not None
        if self._stop.is_set():
            log.warning("second stop request: not waiting for requests in flight")
            self._force.set()
        self._stop.set()

    # -- running -----------------------------------------------------------------------

    def _uvicorn_config(self) -> uvicorn.Config:
        s = self.settings
        kwargs: dict[str, Any] = {}
        if s.tls_cert_file is not None:
            kwargs.update(ssl_certfile=str(s.tls_cert_file), ssl_keyfile=str(s.tls_key_file))
            if s.tls_client_ca_file is not None:
                kwargs.update(ssl_ca_certs=str(s.tls_client_ca_file),
                              ssl_cert_reqs=ssl.CERT_REQUIRED)
        return uvicorn.Config(
            self.app, host=s.host, port=s.http_port, lifespan="on", log_config=None,
            access_log=False, server_header=False,
            timeout_graceful_shutdown=max(1, int(s.drain_timeout_s)), **kwargs,
        )

    async def run(self) -> int:
        self._loop = asyncio.get_running_loop()
        self._stop, self._force = asyncio.Event(), asyncio.Event()
        s = self.settings
        use_compile_cache(s.compile_cache_dir)
        sock = _bind(s.host, s.http_port)
        self.http_port = sock.getsockname()[1]
        if s.grpc_enabled:
            build_grpc_server = _import_grpc()
            try:
                self.grpc = build_grpc_server(self.registry, s, self.metrics)
            except RuntimeError as e:
                sock.close()
                raise StartupError(str(e)) from None
            self.grpc_port = self.grpc.port
            self.grpc.set_serving(False)
            await self.grpc.start()
        http = _Uvicorn(self._uvicorn_config())
        http_task = asyncio.create_task(http.serve(sockets=[sock]), name="uvicorn")
        try:
            while not http.started and not http_task.done():
                await asyncio.sleep(0.01)
            if http_task.done():
                raise StartupError(f"the HTTP server stopped at start-up: {http_task.exception()}")
            log.info("HTTP on %s:%d, gRPC on %s; loading models from %s", s.host,
                     self.http_port, self.grpc_port if self.grpc else "(off)",
                     s.model_repository)
            # Before the models: once they are ready, requests may need it.
            await asyncio.to_thread(langdetect.identifier)
            try:
                await self.registry.load_all()
            except (OSError, ValueError, CheckpointError, EngineError) as e:
                raise StartupError(f"cannot load models: {e}") from None
            if self.grpc is not None:
                self.grpc.set_serving(True)
            heap.freeze()
            self.ready.set()
            log.info("ready: %s", ", ".join(f"{e.name}:{e.version}"
                                             for e in self.registry.engines()))
            stop_wait = asyncio.create_task(self._stop.wait())
            await asyncio.wait({stop_wait, http_task}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if http_task.done():
                raise StartupError(f"the HTTP server stopped unexpectedly: "
                                   f"{http_task.exception()}")
            await self._drain()
            return 0
        finally:
            await self._close(http, http_task)
            self.stopped.set()

    async def _drain(self) -> None:
        assert self._force is not None
        log.info("shutting down: refusing new requests, finishing accepted ones (up to %.0f s)",
                 self.settings.drain_timeout_s)
        self.state.draining = True
        if self.grpc is not None:
            self.grpc.set_serving(False)
        drain = asyncio.create_task(self.registry.drain(self.settings.drain_timeout_s))
        force = asyncio.create_task(self._force.wait())
        await asyncio.wait({drain, force}, return_when=asyncio.FIRST_COMPLETED)
        force.cancel()
        if not drain.done():
            drain.cancel()
            await self.registry.drain(0)
        log.info("drained")

    async def _close(self, http: _Uvicorn, http_task: asyncio.Task[None]) -> None:
        self.state.draining = True
        http.should_exit = True
        if self.grpc is not None:
            await self.grpc.stop(GRPC_STOP_GRACE_S)
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await http_task
        with contextlib.suppress(Exception):
            await self.registry.drain(0)  # no-op after a drain; stops engines on errors


def run(settings: Settings) -> int:
    """serve() on the event loop the settings choose; returns the process exit code."""
    with asyncio.Runner(loop_factory=settings.loop_factory()) as runner:
        return runner.run(serve(settings))


async def serve(settings: Settings) -> int:
    """Run the server until SIGTERM/SIGINT; returns the process exit code."""
    configure_logging(settings.log_level, settings.log_format)
    if not settings.model_repository.exists():
        log.error("model repository %s does not exist (set --model-repository or "
                  "SORA_MODEL_REPOSITORY)", settings.model_repository)
        return 2
    log.debug("settings: %s", settings.log_summary())
    server = SoraServer(settings)
    loop = asyncio.get_running_loop()
    log.info("event loop: %s.%s", type(loop).__module__, type(loop).__name__)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    try:
        return await server.run()
    except StartupError as e:
        log.error("%s", e)
        return 1
    except Exception as e:
        log.exception("server failed: %s", e)
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
