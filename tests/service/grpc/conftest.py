"""A real gRPC server on an ephemeral port over a real (tiny, random-weight) model.

The checkpoint is the shared tiny tokenizer with a model whose seed makes greedy
output visible ASCII text that differs per input ("hathat...", "www..."), and whose
512 target positions let a request run long enough (~0.5 s) to be cancelled or to
outlive a deadline mid-generation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from support import wait_until

from model.checkpoint import save_checkpoint
from model.sora import Sora
from model.tokenizer import SoraTokenizer
from proto.sora.v1 import sora_pb2_grpc
from service.engine.config import EngineConfig
from service.engine.engine import Engine
from service.engine.registry import ModelRegistry
from service.engine.stats import RequestStats, StepStats
from service.grpc.server import GrpcServer, build_grpc_server

MODEL_SEED = 7
MAX_TARGET = 512


def make_settings(**overrides: Any) -> Any:
    """service.config.Settings for a test server (loopback, port 0)."""
    values: dict[str, Any] = {"host": "127.0.0.1", "grpc_port": 0, **overrides}
    try:
        from service.config import Settings
    except ImportError:  # the HTTP side's settings module is not there: same fields
        from types import SimpleNamespace

        defaults: dict[str, Any] = {
            "api_keys": [], "tls_cert_file": None, "tls_key_file": None,
            "tls_client_ca_file": None, "grpc_max_message_bytes": 4 << 20,
            "max_batch_texts": 64, "request_timeout_s": None, "drain_timeout_s": 5.0,
        }
        return SimpleNamespace(**{**defaults, **values})
    return Settings(**values)


@pytest.fixture(scope="session")
def grpc_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: SoraTokenizer, tiny_model: Sora
) -> Path:
    config = dataclasses.replace(tiny_model.config, max_target_positions=MAX_TARGET)
    torch.manual_seed(MODEL_SEED)
    model = Sora(config).eval()
    path = tmp_path_factory.mktemp("grpc") / "tiny"
    return save_checkpoint(path, model, tiny_tokenizer, info={"name": "tiny-grpc"})


@dataclass
class Served:
    registry: ModelRegistry
    server: GrpcServer
    settings: Any
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    records: list[RequestStats] = field(default_factory=list)
    steps: list[StepStats] = field(default_factory=list)

    @property
    def engine(self) -> Engine:
        return self.registry.get()

    def channel(self, credentials: grpc.ChannelCredentials | None = None,
                **options: Any) -> grpc.aio.Channel:
        target = f"127.0.0.1:{self.server.port}"
        opts = list(options.items())
        if credentials is None:
            ch = grpc.aio.insecure_channel(target, options=opts)
        else:
            opts.append(("grpc.ssl_target_name_override", "localhost"))
            ch = grpc.aio.secure_channel(target, credentials, options=opts)
        self.channels.append(ch)
        return ch

    def stub(self, **kwargs: Any) -> sora_pb2_grpc.SoraStub:
        return sora_pb2_grpc.SoraStub(self.channel(**kwargs))

    def grpc_records(self) -> list[RequestStats]:
        return [r for r in self.records if r.protocol == "grpc"]

    async def wait_idle(self) -> None:
        """Until the engine has no running batch and no queue."""
        engine = self.engine
        await wait_until(lambda: engine._batch is None and not len(engine.scheduler),
                         "the engine to be idle")

    async def wait_records(self, n: int = 1) -> list[RequestStats]:
        """The first `n` finished gRPC requests' stats records."""
        await wait_until(lambda: len(self.grpc_records()) >= n, f"{n} request records")
        return self.grpc_records()[:n]

    async def wait_record(self) -> RequestStats:
        return (await self.wait_records(1))[0]



def engine_config(**overrides: Any) -> EngineConfig:
    values: dict[str, Any] = {"device": "cpu", "max_new_tokens": MAX_TARGET, "warmup": False,
                              "compile": "off"}
    return EngineConfig(**{**values, **overrides})


@pytest.fixture
async def serve(grpc_checkpoint: Path) -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    """serve(engine=None, start=True, metrics=None, **settings) -> Served: a loaded
    registry (EngineConfig overrides in `engine`) and a started server on
    127.0.0.1:<ephemeral port>."""
    started: list[Served] = []

    async def _serve(
        engine: dict[str, Any] | None = None, *, start: bool = True, metrics: Any = None,
        **settings: Any,
    ) -> Served:
        registry = ModelRegistry(grpc_checkpoint, engine_config(**(engine or {})))
        served = Served(registry, build_grpc_server(registry, make_settings(**settings),
                                                    metrics), settings)

        def listen(record: RequestStats | StepStats) -> None:
            if isinstance(record, RequestStats):
                served.records.append(record)
            else:
                served.steps.append(record)

        registry.add_listener(listen)
        started.append(served)
        if start:
            await registry.load_all()
            await served.server.start()
        return served

    yield _serve
    for served in started:
        for ch in served.channels:
            await ch.close()
        await served.server.stop(0)
        await served.registry.drain(2.0)
