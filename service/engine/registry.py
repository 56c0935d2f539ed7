"""Every model the server serves, loaded from a model repository folder.

Layout (as Triton's model repository): `ROOT/NAME/VERSION/` holds a checkpoint, or
`ROOT/NAME/` is one (version "1"), or ROOT itself is a single checkpoint. The newest
version of each model is served. A reload loads and warms the new version first, then
switches new requests to it while the old engine drains; a checkpoint that fails
verification leaves the old one serving.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model.checkpoint import MANIFEST, load_checkpoint
from service import heap
from service.engine import routing
from service.engine.config import EngineConfig
from service.engine.core_client import CoreClient, CoreOptions
from service.engine.engine import Engine, EngineState, ModelInfo
from service.engine.errors import ModelNotFound
from service.engine.protocol import EngineClient
from service.engine.request import TaskInput
from service.engine.stats import EngineRestart, RecordListener, notify

log = logging.getLogger(__name__)
# Seconds before each attempt to replace an engine-core process that died.
RESTART_DELAYS_S = (0.5, 2.0, 8.0)


@dataclass(frozen=True)
class ModelSource:
    name: str
    version: str
    path: Path


def _version_key(v: str) -> tuple[int, int | str]:
    return (0, int(v)) if v.isdigit() else (1, v)


def discover(root: Path) -> list[ModelSource]:
    """The newest version of every model under `root`."""
    root = Path(root)
    if (root / MANIFEST).is_file():
        return [ModelSource(root.name, "1", root)]
    found: list[ModelSource] = []
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (model_dir / MANIFEST).is_file():
            found.append(ModelSource(model_dir.name, "1", model_dir))
            continue
        versions = [
            v for v in model_dir.iterdir()
            if v.is_dir() and not v.name.startswith(".") and (v / MANIFEST).is_file()
        ]
        if versions:
            newest = max(versions, key=lambda v: _version_key(v.name))
            found.append(ModelSource(model_dir.name, newest.name, newest))
    return found


class ModelRegistry:
    def __init__(
        self,
        repository: Path,
        config: EngineConfig,
        default_model: str | None = None,
        drain_timeout: float = 30.0,
        core: CoreOptions | None = None,
    ) -> None:
        self.repository = Path(repository)
        self.core = core  # None: engines run in this process; else in processes of their own
        self.config = config
        self.default_model = default_model
        self.drain_timeout = drain_timeout
        self._engines: dict[str, EngineClient] = {}
        self._listeners: list[RecordListener] = []
        self._draining: set[asyncio.Task[None]] = set()
        self._restarting: set[asyncio.Task[None]] = set()

    def add_listener(self, listener: RecordListener) -> None:
        self._listeners.append(listener)
        for engine in self._engines.values():
            engine.add_listener(listener)

    async def _start_engine(self, source: ModelSource) -> EngineClient:
        engine: EngineClient
        if self.core is not None:  # the core process verifies and loads the checkpoint
            engine = CoreClient(source.path, self.config, name=source.name,
                                version=source.version, options=self.core)
            engine.on_exit = functools.partial(self._core_exited, source)
        else:
            ckpt = await asyncio.to_thread(load_checkpoint, source.path)
            engine = Engine(ckpt, self.config, name=source.name, version=source.version)
        for listener in self._listeners:
            engine.add_listener(listener)
        await engine.start()
        return engine

    async def load_all(self) -> None:
        """Load and warm up every model; start-up fails if none loads."""
        if not self.repository.is_dir():
            raise FileNotFoundError(f"model repository {self.repository} is not a directory")
        sources = discover(self.repository)
        if not sources:
            raise FileNotFoundError(f"no checkpoint found under {self.repository}")
        for source in sources:
            self._engines[source.name] = await self._start_engine(source)
            log.info("serving %s version %s from %s", source.name, source.version, source.path)
        if self.default_model is None:
            self.default_model = sources[0].name
        elif self.default_model not in self._engines:
            raise ModelNotFound(f"default model {self.default_model!r} is not in the repository")

    def get(self, name: str | None = None, version: str | None = None) -> EngineClient:
        name = name or self.default_model
        engine = self._engines.get(name or "")
        if engine is None:
            raise ModelNotFound(
                f"model {name!r} not found; serving {', '.join(sorted(self._engines))}",
                field="model")
        if version is not None and version != engine.version:
            raise ModelNotFound(
                f"model {name!r} version {version!r} not found (serving {engine.version})",
                field="version",
            )
        return engine

    def route(
        self, inputs: Sequence[TaskInput], model: str | None = None, version: str | None = None
    ) -> EngineClient:
        """The engine that serves `inputs`, by the rule in service/engine/routing.py:
        the named model if it serves them, else the best model that does. Raises
        ModelNotFound (unknown name or version) or InvalidRequest (not served)."""
        if model:
            engine = self.get(model, version)
            routing.check_serves(engine.name, engine.info().capabilities, inputs)
            return engine
        models = {name: e.info().capabilities for name, e in self._engines.items()}
        return self.get(routing.choose(models, inputs, self.default_model), version)

    def engines(self) -> list[EngineClient]:
        return list(self._engines.values())

    def list(self) -> list[ModelInfo]:
        return [e.info() for e in self._engines.values()]

    @property
    def ready(self) -> bool:
        return bool(self._engines) and all(e.ready for e in self._engines.values())

    def stopped(self) -> builtins.list[str]:
        """Models whose engine stopped while still being served: outside a shutdown,
        an engine-core process that died (the server cannot serve them any more)."""
        return [n for n, e in self._engines.items() if e.state is EngineState.STOPPED]

    async def reload(
        self, name: str, path: Path | None = None, version: str | None = None
    ) -> EngineClient:
        """Hot-swap model `name` to `path` (default: its newest version in the repository).
        Raises (and keeps the old engine serving) when the new checkpoint is bad."""
        if path is None:
            sources = {s.name: s for s in discover(self.repository)}
            if name not in sources:
                raise ModelNotFound(f"model {name!r} not found in {self.repository}")
            source = sources[name]
        else:
            source = ModelSource(name, version or path.name, Path(path))
        new = await self._start_engine(source)
        old = self._engines.get(name)
        self._engines[name] = new
        log.info("model %s now version %s", name, source.version)
        if old is not None:
            task = asyncio.create_task(self._retire(old))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        return new

    def _core_exited(self, source: ModelSource, dead: CoreClient) -> None:
        task = asyncio.create_task(self._restart(source, dead))
        self._restarting.add(task)
        task.add_done_callback(self._restarting.discard)

    async def _restart(self, source: ModelSource, dead: CoreClient) -> None:
        """Replace an engine-core process that died (its requests have failed with
        execution_error), a few times with growing delays; until then the model is
        unavailable and liveness fails, so an orchestrator may restart the server."""
        for attempt, delay in enumerate(RESTART_DELAYS_S, 1):
            await asyncio.sleep(delay)
            if self._engines.get(source.name) is not dead:
                return  # reloaded or shut down meanwhile
            try:
                new = await self._start_engine(source)
            except Exception:
                log.exception("restart %d of %s failed", attempt, source.name)
                continue
            if self._engines.get(source.name) is not dead:
                await new.drain(0)
                return
            self._engines[source.name] = new
            log.warning("model %s: a new engine process replaced the one that died",
                        source.name)
            notify(self._listeners, EngineRestart(source.name))
            return
        log.error("model %s: gave up restarting its engine process", source.name)

    async def _retire(self, engine: EngineClient) -> None:
        """Drain a replaced engine, then let the collector free what it leaves behind."""
        await engine.drain(self.drain_timeout)
        del engine
        heap.refreeze()

    async def scan(self) -> builtins.list[str]:
        """Reload every model whose newest version differs from the one served."""
        changed = []
        for source in discover(self.repository):
            current = self._engines.get(source.name)
            if current is None or current.version != source.version:
                try:
                    await self.reload(source.name)
                    changed.append(source.name)
                except Exception:
                    log.exception("could not load %s version %s", source.name, source.version)
        return changed

    async def drain(self, timeout: float) -> None:
        for task in self._restarting:
            task.cancel()
        await asyncio.gather(*(e.drain(timeout) for e in self._engines.values()))
        if self._draining:
            await asyncio.gather(*self._draining, return_exceptions=True)
