"""One engine per loaded model: owns the device, batches every caller's requests.

Front ends call `submit()`/`generate()` on the event loop; a dedicated thread runs
`step()`: schedule (admit waiting sequences, drop cancelled/expired ones), execute (one
prefill for the admitted, one decode step for the batch), update (deliver tokens,
retire finished rows). The event loop never waits on the model.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from dataclasses import dataclass

import torch

from model.checkpoint import Checkpoint
from model.device import compile_skipped, prepare_for_inference, resolve_device
from model.discriminator import Discriminator, has_discriminator, load_discriminator, rerank
from model.sampling import DecodingParams
from service.engine.admission import Admission
from service.engine.batch import RunningBatch
from service.engine.compiling import CompileState, Outcome, describe, start_background_compile
from service.engine.config import EngineConfig
from service.engine.errors import (
    Cancelled,
    DeadlineExceeded,
    EngineError,
    ExecutionError,
    Unavailable,
)
from service.engine.request import Completion, Job, Sequence, Status, StreamDelta, TaskInput
from service.engine.routing import Capabilities
from service.engine.runner import ModelRunner
from service.engine.scheduler import Scheduler
from service.engine.stats import Listener, RequestStats, StepStats, notify

log = logging.getLogger(__name__)

REAP_INTERVAL_S = 0.05


class EngineState(enum.Enum):
    LOADING = "loading"
    WARMING = "warming"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    tasks: tuple[str, ...]
    languages: tuple[str, ...]
    device: str
    dtype: str
    parameters: int
    max_source_tokens: int
    max_new_tokens: int
    state: str
    can_rerank: bool = False  # the checkpoint carries a discriminator (`rerank`)
    architecture: str = "sora"
    # Directions served; None: any ordered pair of `languages`.
    language_pairs: tuple[tuple[str, str], ...] | None = None

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(self.architecture, self.tasks, self.languages, self.language_pairs)


class Engine:
    def __init__(
        self,
        checkpoint: Checkpoint,
        config: EngineConfig | None = None,
        *,
        name: str | None = None,
        version: str = "1",
    ) -> None:
        self.config = config or EngineConfig()
        self.name = name or checkpoint.name
        self.version = version
        self.manifest = checkpoint.manifest
        self.capabilities = Capabilities.from_manifest(self.manifest)  # a bad one fails here
        device, dtype = resolve_device(self.config.device, self.config.dtype)
        model = prepare_for_inference(
            checkpoint.model.to(device=device, dtype=dtype).eval(),
            quantize=self.config.quantize_int8, compile=self.config.compile,
        )
        self.device, self.dtype = device, dtype
        # compile=background: serve eagerly from start(), compile on a thread of its own,
        # and install the compiled steps between two engine steps (`_swap`).
        self.compile_state = (CompileState.COMPILED if self.config.compile == "wait"
                              else CompileState.OFF)
        self.compile_settled = threading.Event()  # a background compile swapped in or failed
        self._compile_outcome: Outcome | None = None  # from the compiling thread, for _swap
        self._compile_later = False
        if self.config.compile == "background":
            skipped = compile_skipped(device, dtype, self.config.quantize_int8)
            if skipped:
                log.info("model %s is served eagerly: %s", self.name, skipped)
            self._compile_later = not skipped
        self.tokenizer = checkpoint.tokenizer
        # The adversarial stage's discriminator, when the checkpoint carries one: it
        # reorders a request's n-best (`rerank`), in the engine thread like the model.
        self.discriminator: Discriminator | None = None
        if checkpoint.path is not None and has_discriminator(self.manifest):
            self.discriminator = load_discriminator(checkpoint.path, device, dtype,
                                                    manifest=self.manifest)
        self.runner = ModelRunner(model, self.tokenizer)
        cfg = model.config
        self.max_source_tokens = min(
            self.config.max_source_tokens or cfg.max_source_positions, cfg.max_source_positions
        )
        self.max_new_tokens = min(self.config.max_new_tokens, cfg.max_target_positions)
        self.admission = Admission(
            self.tokenizer, self.config, max_source_tokens=self.max_source_tokens,
            max_new_tokens=self.max_new_tokens, name=self.name, capabilities=self.capabilities,
            can_rerank=self.discriminator is not None,
        )
        self.scheduler = Scheduler(self.config)
        self.state = EngineState.LOADING
        self._wake = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._batch: RunningBatch | None = None
        self._listeners: list[Listener] = []
        self._next_reap = 0.0
        self._admit_cap: int | None = None  # lowered after an out-of-memory prefill
        self._fresh: list[Sequence] = []  # admitted, waiting for their first token
        # Accepted sequences not yet ended, wherever they are (queue, prefill, batch):
        # drain waits on this, since a sequence being prefilled is in neither.
        self._open = 0
        self._open_lock = threading.Lock()
        self.parameters = sum(p.numel() for p in checkpoint.model.parameters())

    # -- lifecycle ---------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Called from the engine thread with every RequestStats/StepStats record."""
        self._listeners.append(listener)

    @property
    def ready(self) -> bool:
        return self.state is EngineState.READY

    @property
    def compiled(self) -> bool:
        """Whether the compiled steps are in use."""
        return self.compile_state is CompileState.COMPILED

    async def start(self) -> None:
        """Start the engine thread and warm up (one short generation per task); with
        compile=background, start compiling once ready."""
        self._thread = threading.Thread(target=self._run, name=f"engine-{self.name}", daemon=True)
        self._thread.start()
        self.state = EngineState.WARMING
        if self.config.warmup:
            await self._warmup()
        self.state = EngineState.READY
        log.info("engine %s:%s ready on %s (%s)", self.name, self.version, self.device, self.dtype)
        if self._compile_later:
            self.compile_state = CompileState.COMPILING
            log.info("model %s: compiling the encoder and decode steps in the background; "
                     "serving eagerly meanwhile", self.name)
            start_background_compile(self.runner.model, self.name, self._compile_done)

    def _compile_done(self, outcome: Outcome) -> None:
        """The compiling thread's result, for the engine thread to take at its next step."""
        with self._wake:
            self._compile_outcome = outcome
            self._wake.notify()

    async def _warmup(self) -> None:
        params = DecodingParams(max_new_tokens=4)
        caps = self.capabilities
        source, target = (caps.language_pairs[0] if caps.language_pairs
                          else (caps.languages[0], caps.languages[-1]))
        inputs = [
            TaskInput("translate", "Hello world.", target_lang=target, source_lang=source),
            TaskInput("summarize", "A small tool that prints the current date and time."),
            TaskInput("answer", "What is it?", context="It is a tool."),
        ]
        for inp in (i for i in inputs if i.task in caps.tasks):
            await self._submit(inp, params, protocol="warmup", internal=True).result()

    async def drain(self, timeout: float = 30.0) -> None:
        """Stop admitting, let accepted work finish (up to `timeout`), then stop. Work
        still unfinished at the timeout is failed with an error, never dropped."""
        if self.state is EngineState.STOPPED:
            return
        self.state = EngineState.DRAINING
        deadline = time.monotonic() + timeout
        while self._open and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        leftover = self.scheduler.drain_all()
        if self._batch is not None:
            leftover.extend(self._batch.unique_seqs())
            self._batch = None
        for seq in leftover:
            self._end_seq(seq, Status.ERROR, Unavailable("server shut down before completion"))
        self.state = EngineState.STOPPED

    @property
    def running(self) -> int:
        """Rows of running sequences right now (a beam of k counts k)."""
        batch = self._batch
        return batch.live if batch is not None else 0

    @property
    def waiting(self) -> int:
        """Sequences queued for admission right now."""
        return len(self.scheduler)

    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            version=self.version,
            tasks=self.capabilities.tasks,
            languages=self.capabilities.languages,
            device=str(self.device),
            dtype=str(self.dtype).removeprefix("torch."),
            parameters=self.parameters,
            max_source_tokens=self.max_source_tokens,
            max_new_tokens=self.max_new_tokens,
            state=self.state.value,
            architecture=self.capabilities.architecture,
            language_pairs=self.capabilities.language_pairs,
            can_rerank=self.discriminator is not None,
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
        """Validate, tokenize and queue a request. Raises EngineError subclasses at once
        for bad input (InvalidRequest naming the field), a full queue (Overloaded) or
        an engine that is not accepting work (Unavailable)."""
        return self._submit(
            task_input, params, priority=priority, timeout=timeout, protocol=protocol,
            stream=stream, request_id=request_id,
        )

    async def generate(
        self, task_input: TaskInput, params: DecodingParams | None = None, **kwargs: object
    ) -> Completion:
        """submit() and wait; cancelling the awaiting task cancels the request."""
        job = self.submit(task_input, params, **kwargs)  # type: ignore[arg-type]
        return await job.result()  # which cancels the job when cancelled

    def _submit(
        self,
        task_input: TaskInput,
        params: DecodingParams | None,
        *,
        priority: int = 0,
        timeout: float | None = None,
        protocol: str = "python",
        stream: bool = False,
        request_id: str | None = None,
        internal: bool = False,
    ) -> Job:
        if not internal and self.state is not EngineState.READY:
            raise Unavailable(f"model {self.name} is {self.state.value}, not accepting requests")
        job = self.admission.admit(
            task_input, params, model=self.name, version=self.version, priority=priority,
            timeout=timeout, protocol=protocol, stream=stream, request_id=request_id,
        )
        self.enqueue(job)
        return job

    def enqueue(self, job: Job, wake: bool = True) -> None:
        """Queue a job whose sequences are built and checked (any thread). Raises
        Overloaded when the queue is full. wake=False: the caller queues more, then
        calls wake()."""
        self.scheduler.add(job.sequences)
        with self._open_lock:
            self._open += len(job.sequences)
        if wake:
            self.wake()

    def wake(self) -> None:
        """Tell the engine thread there is work."""
        with self._wake:
            self._wake.notify()

    # -- the engine thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while (not self._stop and self._batch is None and not len(self.scheduler)
                       and self._compile_outcome is None):
                    self._wake.wait(timeout=REAP_INTERVAL_S)
                if self._stop:
                    return
            try:
                self.step()
            except Exception:  # a bug in bookkeeping must not kill the engine
                log.exception("engine step failed; failing the running batch")
                self._fail_batch(ExecutionError("internal engine error"))

    def step(self) -> None:
        """schedule, execute, update."""
        if self._compile_outcome is not None:
            self._swap()
        now = time.monotonic()
        if now >= self._next_reap:
            self._reap_waiting(now)
            self._next_reap = now + REAP_INTERVAL_S
        self._reap_running(now)
        admitted = self._schedule()
        if admitted:
            self._prefill(admitted)
        if self._batch is not None:
            self._decode()

    def _swap(self) -> None:
        """Install the background compile's steps (engine thread, between two steps: a
        step runs wholly eager or wholly compiled, and rows carry on either way)."""
        with self._wake:
            outcome, self._compile_outcome = self._compile_outcome, None
        if isinstance(outcome, Exception):
            log.warning("model %s: compiling failed, serving eagerly: %s", self.name,
                        describe(outcome))
            log.debug("the compile error", exc_info=outcome)
            self.compile_state = CompileState.FAILED
        elif outcome is not None:
            self.runner.model.use_compiled(outcome)
            self.compile_state = CompileState.COMPILED
            log.info("model %s: compiled steps in use from now on (%d rows running)",
                     self.name, self.running)
        self.compile_settled.set()

    def _schedule(self) -> list[Sequence]:
        batch = self._batch
        rows = batch.live if batch else 0
        tokens = batch.reserved_tokens() if batch else 0
        return self.scheduler.admit(rows, tokens, self._admit_cap)

    def _reap_waiting(self, now: float) -> None:
        for seq in self.scheduler.remove_where(lambda s: _ended(s.job, now)):
            self._end_seq(seq, *_end_reason(seq.job, now))

    def _reap_running(self, now: float) -> None:
        batch = self._batch
        if batch is None:
            return
        ended = [s for s in batch.unique_seqs() if _ended(s.job, now)]
        if not ended:
            return
        for seq in ended:
            self._end_seq(seq, *_end_reason(seq.job, now))
        self._retire({id(s) for s in ended})

    def _prefill(self, seqs: list[Sequence]) -> None:
        t0 = time.perf_counter()
        try:
            new = self.runner.prefill(seqs)
        except torch.cuda.OutOfMemoryError:
            if len(seqs) == 1:
                self._end_seq(seqs[0], Status.ERROR, ExecutionError("out of memory in prefill"))
            else:  # retry fewer at a time
                self._admit_cap = max(1, len(seqs) // 2)
                self.scheduler.requeue(seqs)
            return
        except Exception as e:
            log.exception("prefill failed for %d sequences", len(seqs))
            for seq in seqs:
                self._end_seq(seq, Status.ERROR, ExecutionError(f"prefill failed: {e}"))
            return
        self._admit_cap = None
        started = time.monotonic()
        for seq in seqs:
            seq.status = Status.RUNNING
            seq.first_scheduled = started
        self._fresh.extend(seqs)
        self._batch = new if self._batch is None else self._batch.admit(new)
        self._emit(StepStats(
            self.name, "prefill", time.perf_counter() - t0, new.size,
            sum(len(s.source_ids) for s in seqs), self._batch.live, len(self.scheduler),
        ))

    def _decode(self) -> None:
        batch = self._batch
        assert batch is not None
        t0 = time.perf_counter()
        live = batch.live  # rows of this step's sequences (retiring changes the batch)
        try:
            out = self.runner.step(batch)
        except torch.cuda.OutOfMemoryError:
            # Keep the older half running; the newer half fails and frees memory.
            seqs = batch.unique_seqs()
            newest = seqs[len(seqs) // 2 :] if len(seqs) > 1 else seqs
            for seq in newest:
                self._end_seq(seq, Status.ERROR, ExecutionError("out of memory in decode"))
            self._retire({id(s) for s in newest})
            return
        except Exception as e:
            log.exception("decode step failed for a batch of %d rows", batch.size)
            self._fail_batch(ExecutionError(f"decode step failed: {e}"))
            return
        now = time.monotonic()
        finished: set[int] = set()
        done = out.done | out.bad
        done_rows = done.nonzero().flatten().tolist() if bool(done.any()) else []
        bad_rows = set(out.bad.nonzero().flatten().tolist()) if bool(out.bad.any()) else set()
        for seq in self._fresh:
            seq.first_token = now
        self._fresh = []
        for row, seq in batch.watched():
            if seq.beam is not None and seq.beam.done:
                hyps = seq.beam.nbest(seq.params.num_return_sequences)
                toks = [h.output for h in hyps]
                disc: list[float | None] = [None] * len(hyps)
                if seq.params.rerank and self.discriminator is not None:
                    ranked = rerank(self.discriminator, self.tokenizer, seq.source_ids, toks)
                    hyps, toks = [hyps[i] for i, _ in ranked], [toks[i] for i, _ in ranked]
                    disc = [score for _, score in ranked]
                best = hyps[0]
                if seq.params.num_return_sequences > 1:
                    outs = self.tokenizer.decode_batch(toks)
                    seq.candidates = [[t, h.score, d]
                                      for t, h, d in zip(outs, hyps, disc, strict=True)]
                self._finish_seq(seq, toks[0], best.logprob, best.finish_reason)
                finished.add(id(seq))
            elif seq.detok is not None and seq.beam is None and row not in bad_rows:
                piece = seq.detok.push(out.tokens[row])
                if piece:
                    seq.job.post("delta", seq.index, StreamDelta(piece, 1))
        ended: list[tuple[Sequence, list[int], float, str]] = []
        if done_rows:
            # One transfer for every finished row, not a few tensor reads per row.
            idx = torch.tensor(done_rows, device=batch.tokens.device)
            eos_flags = out.eos[idx].tolist()
            lengths = (batch.n_generated[idx] - out.eos[idx].long()).tolist()
            histories = batch.generated[idx].tolist()
            logprobs = batch.logprob[idx].tolist()
            for j, row in enumerate(done_rows):
                seq = batch.seqs[row]
                if seq is None or id(seq) in finished:  # parked rows are never done
                    continue
                finished.add(id(seq))
                if row in bad_rows:
                    self._end_seq(seq, Status.ERROR, ExecutionError("non-finite logits"))
                    continue
                reason = "eos" if eos_flags[j] else "length"
                ended.append((seq, histories[j][: lengths[j]], logprobs[j], reason))
        if ended:
            texts = self.tokenizer.decode_batch([ids for _, ids, _, _ in ended])
            for (seq, ids, logprob, reason), text in zip(ended, texts, strict=True):
                self._finish_seq(seq, ids, logprob, reason, text)
        if finished:
            self._retire(finished)
        self._emit(StepStats(
            self.name, "decode", time.perf_counter() - t0, live, live,
            self._batch.live if self._batch else 0, len(self.scheduler),
        ))

    def _retire(self, seq_ids: set[int]) -> None:
        batch = self._batch
        assert batch is not None
        rows = [i for i, s in enumerate(batch.seqs) if s is not None and id(s) in seq_ids]
        if rows:
            self._batch = batch.retire(rows)

    def _fail_batch(self, error: EngineError) -> None:
        if self._batch is None:
            return
        for seq in self._batch.unique_seqs():
            self._end_seq(seq, Status.ERROR, error)
        self._batch = None

    # -- delivering results --------------------------------------------------------------

    def _finish_seq(
        self, seq: Sequence, ids: list[int], logprob: float, reason: str, text: str | None = None
    ) -> None:
        seq.token_ids = ids
        seq.logprob = logprob
        seq.text = self.tokenizer.decode(ids) if text is None else text
        if seq.detok is not None and seq.beam is None:
            tail = seq.detok.flush()
            if tail:
                seq.job.post("delta", seq.index, StreamDelta(tail, 0))
        else:
            seq.job.post("delta", seq.index, StreamDelta(seq.text, len(ids)))
        self._end_seq(seq, Status.FINISHED_EOS if reason == "eos" else Status.FINISHED_LENGTH)

    def _end_seq(self, seq: Sequence, status: Status, error: EngineError | None = None) -> None:
        if seq.status.finished:
            return
        seq.status = status
        seq.finished_at = time.monotonic()
        with self._open_lock:
            self._open -= 1
        job = seq.job
        # Stats first: whoever awaits the job finds its metrics already recorded.
        if all(s.status.finished for s in job.sequences):
            self._job_stats(job, error)
        if error is not None:
            job.fail(error)  # its other sequences leave the queue/batch at the next step
        else:
            job.post("done", seq.index)

    def _job_stats(self, job: Job, error: EngineError | None) -> None:
        seqs = job.sequences
        end = max(s.finished_at or 0.0 for s in seqs)
        scheduled = [s.first_scheduled for s in seqs if s.first_scheduled is not None]
        first = [s.first_token for s in seqs if s.first_token is not None]
        generated = sum(len(s.token_ids) for s in seqs)
        ttft = (min(first) - job.arrival) if first else None
        tpot = None
        if first and generated > 1:
            tpot = (end - min(first)) / (generated - 1)
        e2e = end - job.arrival
        self.scheduler.avg_seq_seconds = 0.9 * self.scheduler.avg_seq_seconds + 0.1 * e2e
        failed = job.error or error  # `error` ends the job now; job.error: an earlier one
        outcome = failed.code if failed else (
            "length" if any(s.status is Status.FINISHED_LENGTH for s in seqs) else "eos"
        )
        self._emit(RequestStats(
            model=self.name,
            task=job.input.task,
            protocol=job.protocol,
            outcome=outcome,
            queue_s=(min(scheduled) - job.arrival) if scheduled else e2e,
            ttft_s=ttft,
            tpot_s=tpot,
            e2e_s=e2e,
            prompt_tokens=sum(len(s.source_ids) for s in seqs),
            generated_tokens=generated,
        ))

    def _emit(self, record: RequestStats | StepStats) -> None:
        notify(self._listeners, record)


def _ended(job: Job, now: float) -> bool:
    return job.cancelled or job.error is not None or (
        job.deadline is not None and job.deadline <= now
    )


def _end_reason(job: Job, now: float) -> tuple[Status, EngineError | None]:
    if job.error is not None:
        return Status.ERROR, job.error
    if job.cancelled:
        return Status.CANCELLED, Cancelled("request cancelled")
    return Status.DEADLINE, DeadlineExceeded("deadline exceeded before the request finished")

