"""Real servers for front-end tests: the full `SoraServer` (HTTP + gRPC over one
registry, exactly as `sora serve` runs it) on ephemeral loopback ports, in a background
thread with its own event loop, over a tiny random-weight checkpoint.

- `server` (session): one shared server; `server.http_url`, `server.grpc_target`
  (None when the gRPC front end cannot be imported), `server.api_keys("k1", ...)` (a
  context manager: HTTP reads keys per request; gRPC reads them when the server is
  built, so gRPC auth tests should start their own server with `api_keys=[...]`).
- `start_server(**settings)` (function): a private server with Settings overrides,
  stopped (drained) after the test. `paused()` on either holds every engine step, so
  tests can keep requests in flight without racing the clock; `stepwise()` lets the
  steps through one at a time.
- `service_checkpoint` (session): the checkpoint, with room for long generations
  (max_target_positions 512) so drains and disconnects have something to interrupt.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import SecretStr

from model.checkpoint import save_checkpoint
from model.config import SoraConfig
from model.sora import Sora
from model.tokenizer import SoraTokenizer
from service.config import Settings
from service.main import SoraServer

START_TIMEOUT_S = 120.0


def grpc_available() -> bool:
    try:
        import service.grpc.server  # noqa: F401
    except ImportError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def service_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: SoraTokenizer
) -> Path:
    """A model repository holding one tiny checkpoint named `tiny`."""
    torch.manual_seed(4326)  # a seed whose greedy output is not empty
    tok = tiny_tokenizer
    config = SoraConfig(
        vocab_size=tok.vocab_size, d_model=32, n_heads=4, n_encoder_layers=1,
        n_decoder_layers=1, d_ff=64, dropout=0.0, max_source_positions=128,
        max_target_positions=512, pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id,
    )
    root = tmp_path_factory.mktemp("repo")
    save_checkpoint(root / "tiny", Sora(config).eval(), tok, info={"name": "tiny"})
    return root


@dataclass
class RunningServer:
    settings: Settings
    server: SoraServer
    thread: threading.Thread
    errors: list[BaseException] = field(default_factory=list)
    exit_code: int | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    @property
    def grpc_target(self) -> str | None:
        port = self.server.grpc_port
        return f"127.0.0.1:{port}" if port else None

    @property
    def registry(self) -> Any:
        return self.server.registry

    @property
    def metrics(self) -> Any:
        return self.server.metrics

    def set_api_keys(self, keys: list[str]) -> None:
        """Accepted HTTP API keys from now on (empty: auth off)."""
        self.settings.api_keys = [SecretStr(k) for k in keys]

    @contextlib.contextmanager
    def api_keys(self, *keys: str) -> Iterator[None]:
        old = list(self.settings.api_keys)
        self.set_api_keys(list(keys))
        try:
            yield
        finally:
            self.settings.api_keys = old

    def running(self) -> int:
        """Rows in the engines' running batches right now."""
        return sum(e.running for e in self.registry.engines())

    def waiting(self) -> int:
        return sum(e.waiting for e in self.registry.engines())

    @contextlib.contextmanager
    def paused(self, what: str = "decode") -> Iterator[threading.Event]:
        """Hold the engines until the yielded event is set (or the block ends).
        what="decode": admission and prefill go on, decode steps wait, so admitted
        requests stay RUNNING (later ones WAITING once the thread blocks);
        what="step": whole steps wait, so every request stays WAITING and the first
        step after the release admits them together."""
        gate = threading.Event()
        patched: list[tuple[Any, str]] = []
        for engine in self.registry.engines():
            target = engine.runner if what == "decode" else engine
            original = target.step

            def step(*args: Any, _original: Callable[..., Any] = original) -> Any:
                gate.wait(timeout=60)
                return _original(*args)

            target.step = step
            patched.append((target, "step"))
        try:
            yield gate
        finally:
            gate.set()
            for target, name in patched:
                delattr(target, name)  # the class's method again

    @contextlib.contextmanager
    def stepwise(self) -> Iterator[tuple[threading.Semaphore, threading.Event]]:
        """Hold the decode steps one by one: each waits for a release of the yielded
        semaphore (or for the event, which frees them all), so a test can look at a
        request part-way through (a stream's first pieces)."""
        steps, free = threading.Semaphore(0), threading.Event()
        engines = self.registry.engines()
        for engine in engines:
            def step(*args: Any, _original: Callable[..., Any] = engine.runner.step) -> Any:
                if not free.is_set():
                    steps.acquire(timeout=60)
                return _original(*args)

            engine.runner.step = step
        try:
            yield steps, free
        finally:
            free.set()
            steps.release(10_000)
            for engine in engines:
                del engine.runner.step  # the class's method again

    def accepted(self) -> int:
        """Sequences running or waiting."""
        return self.running() + self.waiting()

    def stop(self, timeout: float = 60.0) -> int | None:
        self.server.request_stop()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError("the test server did not stop")
        return self.exit_code


def launch(checkpoint: Path, wait_ready: bool = True, registry: Any = None,
           **overrides: Any) -> RunningServer:
    """Start a SoraServer in a thread; return once it serves (models warm)."""
    values: dict[str, Any] = {
        "model_repository": checkpoint, "host": "127.0.0.1", "http_port": 0,
        "grpc_port": 0, "grpc_enabled": grpc_available(), "drain_timeout_s": 30.0,
        "log_level": "INFO",
        # In-process engines, so paused() can hold their steps; the engine-core process
        # has tests of its own (tests/service/test_engine_process.py).
        "engine_process": False,
    }
    values.update(overrides)
    settings = Settings(**values)
    server = SoraServer(settings, registry=registry)
    running = RunningServer(settings, server, threading.Thread())

    def main() -> None:
        try:
            running.exit_code = asyncio.run(server.run())
        except BaseException as e:  # surfaced by the fixture
            running.errors.append(e)
            server.ready.set()

    running.thread = threading.Thread(target=main, name="sora-test-server", daemon=True)
    running.thread.start()
    if wait_ready:
        if not server.ready.wait(START_TIMEOUT_S):
            raise RuntimeError("the test server did not become ready")
        if running.errors:
            raise running.errors[0]
    return running


@pytest.fixture
def launcher() -> Callable[..., RunningServer]:
    """`launch` itself, for tests that need its lower-level arguments."""
    return launch


@pytest.fixture(scope="session")
def server(service_checkpoint: Path) -> Iterator[RunningServer]:
    running = launch(service_checkpoint)
    yield running
    running.stop()


@pytest.fixture
def start_server(service_checkpoint: Path) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def start(**overrides: Any) -> RunningServer:
        running = launch(service_checkpoint, **overrides)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()
