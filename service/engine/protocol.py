"""What front ends, the registry and metrics may use of an engine (as vLLM's
`EngineClient`): an in-process `Engine` and a `CoreClient` (engine-core process) both
provide it, so nothing above the registry knows which one serves a model."""

from __future__ import annotations

from typing import Protocol

from model.sampling import DecodingParams
from service.engine.compiling import CompileState
from service.engine.config import EngineConfig
from service.engine.engine import EngineState, ModelInfo
from service.engine.request import Completion, Job, TaskInput
from service.engine.stats import Listener


class EngineClient(Protocol):
    name: str
    version: str
    config: EngineConfig
    state: EngineState
    max_new_tokens: int
    compile_state: CompileState  # whether the compiled steps are in use yet

    @property
    def compiled(self) -> bool: ...

    @property
    def ready(self) -> bool: ...

    @property
    def running(self) -> int:
        """Rows in the running batch."""

    @property
    def waiting(self) -> int:
        """Sequences queued for the batch."""

    def add_listener(self, listener: Listener) -> None: ...

    async def start(self) -> None: ...

    async def drain(self, timeout: float = 30.0) -> None: ...

    def info(self) -> ModelInfo: ...

    def submit(
        self,
        task_input: TaskInput,
        params: DecodingParams | None = None,
        *,
        priority: int = 0,
        timeout: float | None = None,
        protocol: str = "python",
        stream: bool = False,
        request_id: str | None = None,
    ) -> Job: ...

    async def generate(
        self, task_input: TaskInput, params: DecodingParams | None = None, **kwargs: object
    ) -> Completion: ...
