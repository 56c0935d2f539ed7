"""The server's side of an engine-core process (`core.py`): the same interface as an
in-process `Engine`, so the registry, front ends and metrics do not tell them apart.

`submit()` validates and tokenizes here (`admission.py`), so bad input still fails at
once with its field; the core gets token ids. The core's per-step message is read on
the event loop (an asyncio protocol on the socket pair, no thread) and turned into the
same Job events an in-process engine posts. Cancellation is forwarded; deadlines travel as
`time.monotonic()` values, which every process of the machine shares.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.checkpoint import load_tokenizer
from model.sampling import DecodingParams
from service.engine import wire
from service.engine.admission import Admission
from service.engine.compiling import CompileState
from service.engine.config import EngineConfig
from service.engine.engine import EngineState, ModelInfo
from service.engine.errors import (
    EngineError,
    ExecutionError,
    Overloaded,
    Unavailable,
    error_from_code,
)
from service.engine.request import Completion, Job, Status, StreamDelta, TaskInput
from service.engine.routing import Capabilities
from service.engine.scheduler import retry_after
from service.engine.stats import Listener, RequestStats, notify

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]  # where `service` imports from
STOP_GRACE_S = 10.0  # after its drain timeout, how long the core may take to say stopped


@dataclass(frozen=True)
class CoreOptions:
    """How engine-core processes are started (from the server's settings)."""

    torch_threads: int = 0  # 0: torch's default (one per core)
    log_level: str = "INFO"
    log_format: str = "text"


class CoreClient:
    def __init__(
        self,
        path: Path,
        config: EngineConfig,
        *,
        name: str,
        version: str,
        options: CoreOptions | None = None,
    ) -> None:
        self.path = Path(path)
        self.config = config
        self.name = name
        self.version = version
        self.options = options or CoreOptions()
        self.state = EngineState.LOADING
        self.max_source_tokens = 0
        self.max_new_tokens = 0
        self.running = 0  # rows in the core's batch, as of its last step
        self.waiting = 0  # sequences in its queue, as of its last step
        self.compile_state = CompileState.OFF  # as the core last said
        self.compile_settled = asyncio.Event()  # its background compile swapped in or failed
        self._info: dict[str, Any] = {}
        self._listeners: list[Listener] = []
        self._jobs: dict[int, Job] = {}  # key -> job not yet ended
        self._keys = itertools.count()
        self._open = 0  # sequences submitted and not yet ended
        self._avg_seq_seconds = 1.0
        self._process: subprocess.Popen[bytes] | None = None
        self._transport: asyncio.Transport | None = None
        self._started: asyncio.Future[list[Any]] | None = None
        self._requests: list[list[Any]] = []  # submits and cancels not yet sent
        self._stopped: asyncio.Future[None] | None = None
        self._admission: Admission | None = None
        self.on_exit: Callable[[CoreClient], None] | None = None  # an unexpected exit

    # -- lifecycle ---------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    @property
    def ready(self) -> bool:
        return self.state is EngineState.READY

    @property
    def compiled(self) -> bool:
        return self.compile_state is CompileState.COMPILED

    async def start(self) -> None:
        """Spawn the core, wait until it has loaded and warmed up the model. Raises
        ExecutionError with the core's reason when it cannot start."""
        # A fresh interpreter (not fork: this process has threads; not multiprocessing's
        # spawn: it re-imports the caller's __main__), talking over a socket pair.
        ours, theirs = socket.socketpair()
        opts = self.options
        spec = {
            "path": str(self.path.resolve()), "name": self.name, "version": self.version,
            "config": dataclasses.asdict(self.config), "torch_threads": opts.torch_threads,
            "log_level": opts.log_level, "log_format": opts.log_format,
        }
        self._process = subprocess.Popen(
            [sys.executable, "-m", "service.engine.core", json.dumps(spec),
             str(theirs.fileno())],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=_child_env(),
        )
        theirs.close()
        self.state = EngineState.WARMING
        loop = asyncio.get_running_loop()
        self._started = loop.create_future()
        try:
            self._transport, _ = await loop.create_unix_connection(
                lambda: _CoreProtocol(self._handle, self._core_gone), sock=ours)
            reply = await self._started
        except BaseException:  # cancelled (shutdown during loading): no orphan core
            self._close()
            self._process.kill()
            self.state = EngineState.STOPPED
            raise
        if reply[0] != "ready":
            code = await asyncio.to_thread(self._process.wait)
            self._close()
            self.state = EngineState.STOPPED
            why = reply[1] if len(reply) > 1 else f"the engine process exited with code {code}"
            raise ExecutionError(f"model {self.name} could not start: {why}")
        self._info = reply[1]
        self.max_source_tokens = self._info["max_source_tokens"]
        self.max_new_tokens = self._info["max_new_tokens"]
        self.compile_state = CompileState(self._info["compile"])
        # The core has verified the checkpoint's hashes, tokenizer.json included; the
        # manifest says how tasks become input (an imported model's prompting).
        manifest = json.loads((self.path / "manifest.json").read_text(encoding="utf-8"))
        tokenizer = load_tokenizer(self.path, manifest)
        self._admission = Admission(tokenizer, self.config,
                                    max_source_tokens=self.max_source_tokens,
                                    max_new_tokens=self.max_new_tokens, name=self.name,
                                    capabilities=Capabilities.from_manifest(manifest),
                                    can_rerank=self._info["can_rerank"])
        self.state = EngineState.READY
        log.info("engine %s:%s ready in process %d on %s (%s)", self.name, self.version,
                 self._process.pid, self._info["device"], self._info["dtype"])

    async def drain(self, timeout: float = 30.0) -> None:
        """Stop admitting; the core lets accepted work finish (up to `timeout`), fails
        what is left, and exits."""
        if self.state is EngineState.STOPPED:
            return
        self.state = EngineState.DRAINING
        if self._stopped is None and self._transport is not None:
            self._stopped = asyncio.get_running_loop().create_future()
            self._send_requests()  # what was submitted before the drain goes first
            self._send(["drain", timeout])
        if self._stopped is not None and not self._stopped.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._stopped), timeout + STOP_GRACE_S)
            except TimeoutError:
                log.error("engine %s did not stop in time; terminating it", self.name)
        self._close()
        self._fail_all(Unavailable("server shut down before completion"))
        if self._process is not None:
            try:
                await asyncio.to_thread(self._process.wait, STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
        self.state = EngineState.STOPPED

    def info(self) -> ModelInfo:
        i = self._info
        return ModelInfo(
            name=self.name, version=self.version, tasks=tuple(i.get("tasks", ())),
            languages=tuple(i.get("languages", ())), device=i.get("device", "?"),
            architecture=i.get("architecture", "sora"),
            language_pairs=None if i.get("language_pairs") is None
            else tuple((s, t) for s, t in i["language_pairs"]),
            dtype=i.get("dtype", "?"), parameters=i.get("parameters", 0),
            max_source_tokens=self.max_source_tokens, max_new_tokens=self.max_new_tokens,
            state=self.state.value, can_rerank=i["can_rerank"],
        )

    # -- submission (event loop) -------------------------------------------------------

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
    ) -> Job:
        """As Engine.submit: raises EngineError subclasses at once for bad input, a full
        queue or an engine that is not accepting work."""
        if self.state is not EngineState.READY or self._admission is None:
            raise Unavailable(f"model {self.name} is {self.state.value}, not accepting requests")
        job = self._admission.admit(
            task_input, params, model=self.name, version=self.version, priority=priority,
            timeout=timeout, protocol=protocol, stream=stream, request_id=request_id,
        )
        n = len(job.sequences)
        queued = max(0, self._open - self.running)  # sent and not (yet) in the batch
        if queued + n > self.config.max_waiting:
            raise Overloaded(
                f"server overloaded: {queued} sequences waiting (limit {self.config.max_waiting})",
                retry_after=retry_after(queued, self._avg_seq_seconds, self.config),
            )
        key = next(self._keys)
        self._queue_request([
            "submit", key, task_input.task, protocol, priority, job.deadline, job.arrival,
            stream, wire.params_to_dict(job.sequences[0].params),
            [s.source_ids for s in job.sequences], job.sequences[0].forced,
        ])
        job.on_cancel = functools.partial(self._cancel, key)
        self._jobs[key] = job
        self._open += n
        return job

    async def generate(
        self, task_input: TaskInput, params: DecodingParams | None = None, **kwargs: object
    ) -> Completion:
        """submit() and wait; cancelling the awaiting task cancels the request."""
        job = self.submit(task_input, params, **kwargs)  # type: ignore[arg-type]
        return await job.result()  # which cancels the job when cancelled

    def _cancel(self, key: int) -> None:
        transport = self._transport
        if key in self._jobs and transport is not None and not transport.is_closing():
            self._queue_request(["cancel", key])

    def _queue_request(self, request: list[Any]) -> None:
        """Submits and cancels go out together once per pass of the event loop: one
        frame, one system call, and one admission in the core for requests that
        arrived together (64 clients answered by one step resubmit in the same pass)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise Unavailable(f"model {self.name} is not running")
        self._requests.append(request)
        if len(self._requests) == 1:
            asyncio.get_running_loop().call_soon(self._send_requests)

    def _send_requests(self) -> None:
        requests, self._requests = self._requests, []
        transport = self._transport
        if requests and transport is not None and not transport.is_closing():
            transport.write(wire.frame(["requests", requests]))
        # else the core is gone, and _core_gone fails these jobs

    def _send(self, message: list[Any]) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise Unavailable(f"model {self.name} is not running")
        transport.write(wire.frame(message))

    # -- the core's messages (event loop) ----------------------------------------------

    def _handle(self, message: list[Any]) -> None:
        kind = message[0]
        if self._started is not None and not self._started.done():
            self._started.set_result(message)  # "ready" or "failed"
        elif kind == "events":
            for event in message[1]:
                self._event(event)
        elif kind == "stopped":
            if self._stopped is not None and not self._stopped.done():
                self._stopped.set_result(None)
        else:
            log.error("engine %s: unexpected message %r", self.name, kind)

    def _event(self, event: list[Any]) -> None:
        kind = event[0]
        if kind == "delta":
            job = self._jobs.get(event[1])
            if job is not None:
                job.deliver("delta", event[2], StreamDelta(event[3], event[4]))
        elif kind == "done":
            key, index = event[1], event[2]
            job = self._jobs.get(key)
            if job is None:  # failed already; the core finished a sibling in that step
                return
            seq = job.sequences[index]
            seq.status, seq.token_ids, seq.logprob, seq.text, seq.candidates = (
                Status(event[3]), event[4], event[5], event[6], event[7])
            self._open -= 1
            if job.finished:
                del self._jobs[key]
            job.deliver("done", index, None)
        elif kind == "error":
            job = self._jobs.pop(event[1], None)
            if job is not None:
                self._fail(job, error_from_code(*event[2:]))
        elif kind == "load":
            self.running, self.waiting = event[1], event[2]
        elif kind == "compile":
            self.compile_state = CompileState(event[1])
            self.compile_settled.set()
        else:
            record = wire.stats_from_event(kind, event[1])
            if isinstance(record, RequestStats):
                self._avg_seq_seconds = 0.9 * self._avg_seq_seconds + 0.1 * record.e2e_s
            notify(self._listeners, record)

    def _fail(self, job: Job, error: EngineError) -> None:
        for seq in job.sequences:
            if not seq.status.finished:
                seq.status = Status.ERROR
                self._open -= 1
        job.error = error
        job.deliver("error", -1, error)

    def _fail_all(self, error: EngineError) -> None:
        jobs, self._jobs = self._jobs, {}
        for job in jobs.values():
            self._fail(job, error)

    def _core_gone(self) -> None:
        """The connection closed: expected once we closed it or asked for a drain."""
        if self._started is not None and not self._started.done():
            self._started.set_result(["failed"])
            return
        if self._transport is None:  # closed by us
            return
        self._transport = None
        if self._stopped is not None:
            if not self._stopped.done():
                self._stopped.set_result(None)
            return
        log.error("engine process of %s exited unexpectedly (code %s)", self.name,
                  self._process.poll() if self._process else None)
        self.state = EngineState.STOPPED
        self._fail_all(ExecutionError("the engine process exited"))
        if self.on_exit is not None:
            self.on_exit(self)

    def _close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()


class _CoreProtocol(asyncio.Protocol):
    """The core's byte stream, on the event loop: split into messages as it arrives."""

    def __init__(self, on_message: Callable[[list[Any]], None],
                 on_lost: Callable[[], None]) -> None:
        self._frames = wire.FrameReader()
        self._on_message = on_message
        self._on_lost = on_lost

    def data_received(self, data: bytes) -> None:
        for message in self._frames.feed(data):
            self._on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()


def _child_env() -> dict[str, str]:
    """This environment, with the directory `service` was imported from first on the
    path: the core runs the same code as the server, wherever it was started."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env
