"""The engine-core process: one model's engine with a Python interpreter of its own.

In one process the engine thread shares the GIL with the event loop that runs both
front ends, and waits for it between its torch ops while HTTP and gRPC requests are
parsed (measured with `benchmarks.gil_share`). Here the engine runs as in-process
(scheduler, runner, engine thread unchanged) in a child the server spawns; its main
thread reads the server's messages (`wire.py`) and the engine thread sends back one
message per step with every event and stats record of that step. Requests arrive as
token ids: validation and tokenization stay in the server process (`admission.py`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import signal
import socket
import sys
import threading
from typing import Any

import torch

from model.checkpoint import Checkpoint, load_checkpoint
from service import heap
from service.engine import wire
from service.engine.config import EngineConfig
from service.engine.engine import Engine
from service.engine.errors import EngineError
from service.engine.request import Job, Sequence, StreamDelta, TaskInput
from service.engine.stats import RequestStats, StepStats

log = logging.getLogger("service.engine.core")  # also when run as __main__


class CoreEngine(Engine):
    """An Engine whose jobs post their events down a pipe, batched per step."""

    def __init__(
        self, checkpoint: Checkpoint, config: EngineConfig, conn: socket.socket, *,
        name: str, version: str,
    ) -> None:
        super().__init__(checkpoint, config, name=name, version=version)
        self._conn = conn
        self._send_lock = threading.Lock()
        self._outbox: list[list[Any]] = []  # filled by the engine thread, sent per step
        self.jobs: dict[int, Job] = {}  # server's key -> job, until the job ends
        self._load = (0, 0)  # (running rows, waiting sequences) last sent
        self._compile_sent = self.compile_state  # as the "ready" message tells it
        self._serving = False  # warm-up done, "ready" sent: the server reads events now

    def step(self) -> None:
        super().step()
        load = (self.running, self.waiting)
        if self._serving and load != self._load:  # the server's gauges and queue limit
            self._load = load
            self._outbox.append(["load", *load])
        if self._serving and self.compile_state is not self._compile_sent:
            self._compile_sent = self.compile_state  # the background compile ended
            self._outbox.append(["compile", self.compile_state.value])
        self.flush()

    def flush(self) -> None:
        if self._outbox:
            events, self._outbox = self._outbox, []
            self.send(["events", events])

    def send(self, message: list[Any]) -> None:
        try:
            with self._send_lock:
                self._conn.sendall(wire.frame(message))
        except OSError:  # the server has gone: the main thread sees EOF and stops
            pass

    def _stats(self, record: RequestStats | StepStats) -> None:
        self._outbox.append(wire.stats_event(record))

    def _post(self, key: int, job: Job, kind: str, index: int, payload: object) -> None:
        """A job's event (engine thread, or the main thread once the engine stopped)."""
        if kind == "delta":
            assert isinstance(payload, StreamDelta)
            self._outbox.append(["delta", key, index, payload.text, payload.tokens])
        elif kind == "done":
            seq = job.sequences[index]
            self._outbox.append(["done", key, index, seq.status.value, seq.token_ids,
                                 seq.logprob, seq.text, seq.candidates])
            if job.finished:
                self.jobs.pop(key, None)
        elif kind == "error":
            assert isinstance(payload, EngineError)
            self._outbox.append(wire.error_event(key, payload))
            self.jobs.pop(key, None)

    # -- the main thread -----------------------------------------------------------------

    def serve(self) -> None:
        """Read the server's messages until it asks for a drain or goes away."""
        self.add_listener(self._stats)  # after warm-up: the server never sees warm-up
        self._serving = True
        if self.compile_state is not self._compile_sent:  # swapped in since "ready"
            self._compile_sent = self.compile_state
            self.send(["events", [["compile", self.compile_state.value]]])
        while True:
            try:
                message = wire.read_frame(self._conn)
            except (EOFError, OSError):
                log.warning("engine %s: the server process went away; stopping", self.name)
                asyncio.run(self.drain(0))
                return
            kind = message[0]
            if kind == "requests":
                # Everything the server submitted or cancelled in one pass of its event
                # loop: queued together, then one wake-up, so that requests that arrive
                # together are prefilled together.
                for request in message[1]:
                    if request[0] == "submit":
                        self._submit_message(request)
                    elif request[0] == "cancel" and (job := self.jobs.get(request[1])):
                        job.cancel()
                self.wake()
            elif kind == "drain":
                asyncio.run(self.drain(float(message[1])))
                self.flush()  # what the drain failed
                self.send(["stopped"])
                return
            else:
                log.error("engine %s: unknown message %r", self.name, kind)

    def _submit_message(self, message: list[Any]) -> None:
        (_, key, task, protocol, priority, deadline, arrival, stream, params,
         sources, forced) = message
        job = Job(
            TaskInput(task, ""), model=self.name, version=self.version, protocol=protocol,
            priority=priority, deadline=deadline, stream=stream, arrival=arrival,
            sink=functools.partial(self._post, key),
        )
        decoding = wire.params_from_dict(params)
        job.sequences = [
            Sequence(job=job, index=i, source_ids=ids, params=decoding, forced=forced)
            for i, ids in enumerate(sources)
        ]
        self.jobs[key] = job
        try:
            self.enqueue(job, wake=False)
        except EngineError as e:  # the queue filled up since the server last heard
            self.jobs.pop(key, None)
            self.send(["events", [wire.error_event(key, e)]])


def run_core(conn: socket.socket, spec: dict[str, Any]) -> None:
    """Load, warm up, say ready, serve until told to drain. `spec`: what `CoreClient`
    passes on the command line (checkpoint path, name, version, config, options)."""
    # Signals are the server's to handle: it drains, then tells this process to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from service.http.logs import configure_logging

    configure_logging(spec["log_level"], spec["log_format"])
    if spec["torch_threads"]:
        torch.set_num_threads(spec["torch_threads"])
    name = spec["name"]
    try:
        checkpoint = load_checkpoint(spec["path"])
        engine = CoreEngine(checkpoint, EngineConfig(**spec["config"]), conn, name=name,
                            version=spec["version"])
        asyncio.run(engine.start())
    except Exception as e:
        log.exception("engine %s could not start", name)
        conn.sendall(wire.frame(["failed", f"{type(e).__name__}: {e}"]))
        return
    heap.freeze()
    info = engine.info()
    engine._compile_sent = engine.compile_state
    conn.sendall(wire.frame(["ready", {
        **info.capabilities.to_dict(), "device": info.device,
        "dtype": info.dtype, "parameters": info.parameters,
        "max_source_tokens": info.max_source_tokens, "max_new_tokens": info.max_new_tokens,
        "can_rerank": info.can_rerank,
        "compile": engine._compile_sent.value,
    }]))
    engine.serve()


if __name__ == "__main__":  # python -m service.engine.core SPEC_JSON FD (CoreClient runs it)
    run_core(socket.socket(fileno=int(sys.argv[2])), json.loads(sys.argv[1]))
