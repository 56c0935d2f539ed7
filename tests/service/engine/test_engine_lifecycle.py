"""Cancellation, deadlines, priority and drain: rows are freed, the queue empties, and
requests that were not touched still produce exactly their solo output."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest
from conftest import TEXTS, MakeEngine, assert_same, running_jobs, solo
from support import Gate, wait_until

from model.sampling import DecodingParams
from service.engine import (
    Cancelled,
    DeadlineExceeded,
    Engine,
    EngineState,
    TaskInput,
    Unavailable,
)

LONG = DecodingParams(max_new_tokens=60, ignore_eos=True)
SHORT = DecodingParams(max_new_tokens=12)


def slow_steps(engine: Engine, monkeypatch: pytest.MonkeyPatch, seconds: float = 0.003) -> None:
    """Each decode step takes at least `seconds` longer (values unchanged), so a
    request of LONG certainly outlives a deadline shorter than 60 * `seconds`."""
    model = engine.runner.model
    original = model.decode_step

    def decode_step(*args: Any) -> Any:
        time.sleep(seconds)
        return original(*args)

    monkeypatch.setattr(model, "decode_step", decode_step)


def bystanders() -> list[TaskInput]:
    return [
        TaskInput("translate", TEXTS[0], target_lang="de"),
        TaskInput("summarize", TEXTS[8]),
        TaskInput("answer", TEXTS[9], context=TEXTS[3]),
    ]


async def test_job_cancel_frees_rows_and_spares_others(engine: Engine) -> None:
    with Gate(engine.runner, "step"):  # decode held: the victim is cancelled mid-flight
        victim = engine.submit(TaskInput("translate", TEXTS[1], target_lang="fr"), LONG)
        others = [engine.submit(inp, SHORT) for inp in bystanders()]
        await wait_until(lambda: victim.id in running_jobs(engine))
        victim.cancel()
    with pytest.raises(Cancelled) as err:
        await victim.result()
    assert err.value.code == "cancelled"
    await wait_until(lambda: victim.id not in running_jobs(engine))
    results = await asyncio.gather(*(j.result() for j in others))
    for inp, done in zip(bystanders(), results, strict=True):
        assert_same(done, solo(engine, inp, SHORT), inp)
    await wait_until(lambda: engine._batch is None)
    assert len(engine.scheduler) == 0


async def test_cancelling_the_awaiting_task_cancels_the_request(engine: Engine) -> None:
    with Gate(engine.runner, "step"):
        task = asyncio.create_task(engine.generate(TaskInput("summarize", TEXTS[4]), LONG))
        await wait_until(lambda: bool(running_jobs(engine)))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    await wait_until(lambda: engine._batch is None)
    inp = bystanders()[0]
    assert_same(await engine.generate(inp, SHORT), solo(engine, inp, SHORT))


async def test_cancelling_a_result_waiter_cancels_the_job(engine: Engine) -> None:
    with Gate(engine.runner, "step"):
        job = engine.submit(TaskInput("summarize", TEXTS[4]), LONG)
        waiter = asyncio.create_task(job.result())
        await wait_until(lambda: job.id in running_jobs(engine))
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert job.cancelled
    await wait_until(lambda: engine._batch is None)


async def test_outcome_futures_gather_directly_and_match_result(engine: Engine) -> None:
    jobs = [engine.submit(inp, SHORT) for inp in bystanders()]
    done = await asyncio.gather(*(j.outcome() for j in jobs))
    for job, inp, completion in zip(jobs, bystanders(), done, strict=True):
        assert_same(completion, solo(engine, inp, SHORT), inp)
        assert await job.result() is completion


async def test_a_failed_stream_read_only_through_deltas_logs_no_stray_error(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    slow_steps(engine, monkeypatch)
    job = engine.submit(TaskInput("summarize", TEXTS[4]), LONG, stream=True, timeout=0.05)
    pieces = [d async for d in job.deltas()]  # ends at the deadline
    assert sum(p.tokens for p in pieces) < LONG.max_new_tokens
    await wait_until(lambda: engine._batch is None)
    del job
    gc.collect()
    assert "never retrieved" not in caplog.text


async def test_cancel_while_queued_empties_the_queue(make_engine: MakeEngine) -> None:
    engine = await make_engine(max_batch_sequences=1)
    with Gate(engine.runner, "step"):  # `first` holds the only row: the others queue
        first = engine.submit(TaskInput("summarize", TEXTS[4]), LONG)
        queued = [engine.submit(inp, SHORT) for inp in bystanders()]
        await wait_until(lambda: first.id in running_jobs(engine))
        queued[1].cancel()
    with pytest.raises(Cancelled):
        await queued[1].result()
    first.cancel()
    for job, inp in ((queued[0], bystanders()[0]), (queued[2], bystanders()[2])):
        assert_same(await job.result(), solo(engine, inp, SHORT))
    await wait_until(lambda: engine._batch is None and len(engine.scheduler) == 0)


async def test_deadline_fails_running_and_queued_requests(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await make_engine(max_batch_sequences=2)
    slow_steps(engine, monkeypatch)
    running = engine.submit(TaskInput("summarize", TEXTS[4]), LONG, timeout=0.05)
    other = engine.submit(bystanders()[0], SHORT)
    queued = engine.submit(TaskInput("summarize", TEXTS[5]), LONG, timeout=0.05)
    for job in (running, queued):
        with pytest.raises(DeadlineExceeded) as err:
            await job.result()
        assert err.value.code == "deadline_exceeded"
    assert_same(await other.result(), solo(engine, bystanders()[0], SHORT))
    await wait_until(lambda: engine._batch is None and len(engine.scheduler) == 0)


async def test_higher_priority_is_admitted_first(make_engine: MakeEngine) -> None:
    engine = await make_engine(max_batch_sequences=1)
    order: list[str] = []

    async def run(name: str, priority: int, params: DecodingParams) -> None:
        await engine.submit(TaskInput("summarize", TEXTS[4]), params, priority=priority).result()
        order.append(name)

    with Gate(engine.runner, "step"):  # `first` holds the only row until all are queued
        first = asyncio.create_task(run("first", 0, LONG))
        await wait_until(lambda: bool(running_jobs(engine)))
        low = [asyncio.create_task(run(f"low{i}", 0, SHORT)) for i in range(3)]
        await wait_until(lambda: engine.waiting == 3)  # before the urgent one arrives
        urgent = asyncio.create_task(run("urgent", 5, SHORT))
        await wait_until(lambda: engine.waiting == 4)
    await asyncio.gather(first, urgent, *low)
    assert order == ["first", "urgent", "low0", "low1", "low2"]


async def test_drain_finishes_accepted_work_and_rejects_new(make_engine: MakeEngine) -> None:
    engine = await make_engine(max_batch_sequences=2)
    inputs = [TaskInput("translate", t, target_lang="es") for t in TEXTS[:6]]
    with Gate(engine.runner, "step"):  # none has finished when the drain begins
        jobs = [engine.submit(inp, SHORT) for inp in inputs]
        drain = asyncio.create_task(engine.drain(timeout=30.0))
        await asyncio.sleep(0)  # the drain task runs first: it marks the engine at once
        assert engine.state is EngineState.DRAINING
        with pytest.raises(Unavailable) as err:
            engine.submit(inputs[0], SHORT)
        assert err.value.code == "unavailable"
    results = await asyncio.gather(*(j.result() for j in jobs))
    await drain
    assert engine.state is EngineState.STOPPED
    for inp, done in zip(inputs, results, strict=True):
        assert_same(done, solo(engine, inp, SHORT))


async def test_drain_waits_for_a_request_being_prefilled(engine: Engine) -> None:
    """A request taken off the queue but not yet in the batch is still accepted work."""
    inp = bystanders()[1]
    with Gate(engine.runner, "prefill") as prefill:
        job = engine.submit(inp, SHORT)
        await wait_until(lambda: prefill.held == 1)  # off the queue, not in the batch
        drain = asyncio.create_task(engine.drain(timeout=30.0))
        await wait_until(lambda: engine.state is EngineState.DRAINING)
    await drain
    assert_same(await job.result(), solo(engine, inp, SHORT))
