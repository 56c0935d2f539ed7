"""A request's lifecycle: a Job (what the caller submitted) made of Sequences (what the
model decodes), with status, timestamps and an output channel the caller awaits.

The engine thread changes status and posts events; the caller's event loop receives
them through `loop.call_soon_threadsafe`, so nothing is shared without a hand-off. The
loop keeps the events for streaming consumers and resolves one future when the job
ends, so a unary caller waits on that future alone: no task, queue or generator per
request on the event loop, whose time the engine thread pays for (it shares the GIL).
In an engine-core process a job has a `sink` instead: its events go down the pipe to the
server, where a job of the caller's loop receives them through `deliver()`.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from model.generation import BeamSearch
from model.sampling import DecodingParams
from model.tokenizer import IncrementalDetokenizer
from service.engine.errors import Cancelled, EngineError

_arrival_counter = itertools.count()


@dataclass(frozen=True)
class TaskInput:
    task: str  # translate | summarize | answer
    text: str  # the text to translate/summarize, or the question
    target_lang: str | None = None
    source_lang: str | None = None
    context: str | None = None  # answer: the passage


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED_EOS = "eos"
    FINISHED_LENGTH = "length"
    CANCELLED = "cancelled"
    DEADLINE = "deadline"
    ERROR = "error"

    @property
    def finished(self) -> bool:
        return self not in (Status.WAITING, Status.RUNNING)


@dataclass
class Sequence:
    """One encoder input and its decoding; a beam sequence occupies beam_size rows."""

    job: Job
    index: int  # position within the job's output
    source_ids: list[int]
    params: DecodingParams
    # The token the output must start with (NLLB's target code), or the decoder's start
    # token where the prompting says so (mBART-cc25's, `Prompting.forced_start`).
    forced: int | None = None
    status: Status = Status.WAITING
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    logprob: float = 0.0
    detok: IncrementalDetokenizer | None = None  # set when the job streams
    beam: BeamSearch | None = None
    # n-best [text, score, discriminator score or None], best first
    candidates: list[list[Any]] | None = None
    first_scheduled: float | None = None
    first_token: float | None = None
    finished_at: float | None = None

    @property
    def rows(self) -> int:
        return self.params.rows

    @property
    def reserved_tokens(self) -> int:
        """Worst-case tokens this sequence can hold in the batch."""
        return self.rows * (len(self.source_ids) + self.params.max_new_tokens)


@dataclass(frozen=True)
class StreamDelta:
    text: str
    tokens: int  # tokens this piece completes


@dataclass(frozen=True)
class Candidate:
    """One of a beam search's n best outputs."""

    text: str
    score: float  # log-probability / length ** length_penalty (the beam's ranking)
    # rerank: the discriminator's log P(reference), by which the n best are then ordered
    discriminator_score: float | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "eos" | "length"
    prompt_tokens: int
    completion_tokens: int
    logprob: float | None  # None when the request set return_logprob=False
    model: str
    version: str
    segments: int
    # num_return_sequences > 1: the n best outputs, best (= text) first. None for
    # documents split into several segments, whose outputs are joined.
    candidates: list[Candidate] | None = None


EventSink = Callable[["Job", str, int, object], None]
"""Where an engine-core process sends a job's events instead of a caller's loop."""


class Job:
    """What one caller submitted: sequences whose outputs are joined in order."""

    def __init__(
        self,
        task_input: TaskInput,
        *,
        model: str,
        version: str,
        protocol: str,
        priority: int,
        deadline: float | None,
        stream: bool,
        request_id: str | None = None,
        arrival: float | None = None,
        sink: EventSink | None = None,
    ) -> None:
        self.id = request_id or uuid.uuid4().hex
        self.input = task_input
        self.model = model
        self.version = version
        self.protocol = protocol
        self.priority = priority
        self.deadline = deadline  # time.monotonic() value, or None
        self.stream = stream
        self.arrival = time.monotonic() if arrival is None else arrival
        self.order = next(_arrival_counter)
        self.sequences: list[Sequence] = []
        self.joiners: list[str] = []  # text placed after each sequence's output
        self.sink = sink
        if sink is None:  # the caller awaits this job on its own loop
            self._loop = asyncio.get_running_loop()
            self._events: asyncio.Queue[tuple[str, int, object]] = asyncio.Queue()
            self._done: asyncio.Future[Completion] = self._loop.create_future()
        self._sequences_done = 0
        self._cancel = threading.Event()
        self.on_cancel: Callable[[], None] | None = None  # forwards cancel() (engine core)
        self._drained = False  # deltas() has run to the job's end (or was abandoned)
        self.error: EngineError | None = None  # set by the engine thread

    # -- caller side (event loop) ------------------------------------------------------

    def cancel(self) -> None:
        """Ask the engine to drop this job; its rows are freed at the next step."""
        if not self._cancel.is_set():
            self._cancel.set()
            if self.on_cancel is not None:
                self.on_cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def outcome(self) -> asyncio.Future[Completion]:
        """The job's completion (or its EngineError) as a future of the caller's loop,
        for asyncio.wait/gather without wrapping a coroutine in a task. Cancelling it
        does not cancel the job: call cancel() for that."""
        return self._done

    async def result(self) -> Completion:
        """Wait for the whole output. Raises the EngineError that ended the job;
        cancelling the waiting task cancels the job."""
        try:
            return await self._done
        except asyncio.CancelledError:
            self.cancel()
            raise

    async def deltas(self) -> AsyncIterator[StreamDelta]:
        """Text pieces in output order as they are generated (streaming jobs yield them
        token by token; others yield each segment's text once it is done)."""
        if self._drained:
            return
        n = len(self.sequences)
        pending: list[list[StreamDelta]] = [[] for _ in range(n)]
        done = [False] * n
        current = 0
        try:
            while current < n:
                kind, idx, payload = await self._events.get()
                if kind == "error":
                    self._drained = True
                    return
                if kind == "delta":
                    assert isinstance(payload, StreamDelta)
                    if idx == current:
                        yield payload
                    else:
                        pending[idx].append(payload)
                elif kind == "done":
                    done[idx] = True
                    while current < n and done[current]:
                        if self.joiners[current] and current < n - 1:
                            yield StreamDelta(self.joiners[current], 0)
                        current += 1
                        if current < n:
                            for d in pending[current]:
                                yield d
                            pending[current].clear()
            self._drained = True
        finally:
            if not self._drained:
                # The consumer stopped early (client went away): free the rows.
                self._drained = True
                self.cancel()
                self._fail_outcome(Cancelled("request cancelled by the client"))

    def deliver(self, kind: str, index: int, payload: object) -> None:
        """An engine event, on the caller's loop: queued for deltas(), and the outcome
        resolved by the error or the last sequence's "done"."""
        self._events.put_nowait((kind, index, payload))
        if kind == "error":
            assert isinstance(payload, EngineError)
            self._fail_outcome(payload)
        elif kind == "done":
            self._sequences_done += 1
            if self._sequences_done == len(self.sequences) and not self._done.done():
                self._done.set_result(self._completion())

    def _fail_outcome(self, error: EngineError) -> None:
        if not self._done.done():
            self._done.set_exception(error)
            # Streaming consumers learn of it from deltas() and may never await the
            # future; asyncio would log its exception as never retrieved.
            self._done.exception()

    def _completion(self) -> Completion:
        seqs = self.sequences
        text = "".join(
            s.text + (j if i < len(seqs) - 1 else "")
            for i, (s, j) in enumerate(zip(seqs, self.joiners, strict=True))
        )
        return Completion(
            text=text,
            finish_reason="length" if any(s.status is Status.FINISHED_LENGTH for s in seqs)
            else "eos",
            prompt_tokens=sum(len(s.source_ids) for s in seqs),
            completion_tokens=sum(len(s.token_ids) for s in seqs),
            logprob=sum(s.logprob for s in seqs) if seqs[0].params.return_logprob else None,
            model=self.model,
            version=self.version,
            segments=len(seqs),
            candidates=[Candidate(*c) for c in seqs[0].candidates]
            if len(seqs) == 1 and seqs[0].candidates else None,
        )

    # -- engine side (engine thread) ---------------------------------------------------

    def post(self, kind: str, index: int, payload: object = None) -> None:
        if self.sink is not None:
            self.sink(self, kind, index, payload)
        else:
            self._loop.call_soon_threadsafe(self.deliver, kind, index, payload)

    def fail(self, error: EngineError) -> None:
        if self.error is None:
            self.error = error
            self.post("error", -1, error)

    @property
    def finished(self) -> bool:
        return self.error is not None or all(s.status.finished for s in self.sequences)
