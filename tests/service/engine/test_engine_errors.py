"""Bad input, a full queue and failing model steps: each gives its own error, only the
requests concerned fail, and the engine keeps serving."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from conftest import TEXTS, MakeEngine, assert_same, solo
from support import Gate, wait_until

from model.sampling import DecodingParams
from service.engine import (
    Engine,
    ExecutionError,
    InputTooLong,
    InvalidRequest,
    Job,
    Overloaded,
    TaskInput,
)

SHORT = DecodingParams(max_new_tokens=10)
GOOD = TaskInput("translate", TEXTS[0], target_lang="de")


async def still_serves(engine: Engine) -> None:
    assert_same(await engine.generate(GOOD, SHORT), solo(engine, GOOD, SHORT))


@pytest.mark.parametrize(
    ("inp", "params", "error", "field", "mentions"),
    [
        (TaskInput("poem", "Roses are red."), SHORT, InvalidRequest, "task", "poem"),
        (TaskInput("translate", "Hi.", target_lang="xx"), SHORT, InvalidRequest,
         "target_lang", "xx"),
        (TaskInput("translate", "Hi.", target_lang="de", source_lang="tlh"), SHORT,
         InvalidRequest, "source_lang", "tlh"),
        (TaskInput("translate", "Hi."), SHORT, InvalidRequest, "target_lang", "required"),
        (TaskInput("summarize", ""), SHORT, InvalidRequest, "text", "non-empty"),
        (TaskInput("summarize", " \n\t "), SHORT, InvalidRequest, "text", "non-empty"),
        (TaskInput("answer", "", context="Paris."), SHORT, InvalidRequest, "question",
         "non-empty"),
        (GOOD, DecodingParams(max_new_tokens=65), InvalidRequest, "max_new_tokens", "64"),
        (TaskInput("summarize", "x" * 2001), SHORT, InputTooLong, "text", "2000"),
        (TaskInput("answer", "Why?", context="y" * 2001), SHORT, InputTooLong, "context",
         "2000"),
        # One context of more tokens than the model's 64 source positions.
        (TaskInput("answer", "Why?", context=" ".join(TEXTS[:4])), SHORT, InputTooLong,
         "context", "64"),
        # A "sentence" longer than one sequence cannot be segmented.
        (TaskInput("summarize", "lorem ipsum " * 40), SHORT, InputTooLong, "text", "tokens"),
    ],
)
async def test_invalid_input_is_rejected_with_its_field(
    make_engine: MakeEngine,
    inp: TaskInput,
    params: DecodingParams,
    error: type[InvalidRequest],
    field: str,
    mentions: str,
) -> None:
    engine = await make_engine(max_input_chars=2000)
    with pytest.raises(error) as err:
        engine.submit(inp, params)
    assert type(err.value) is error
    assert err.value.field == field
    assert mentions in err.value.message
    assert err.value.code == ("input_too_long" if error is InputTooLong else "invalid_argument")
    assert len(engine.scheduler) == 0
    await still_serves(engine)


async def test_beam_wider_than_the_batch_is_rejected(make_engine: MakeEngine) -> None:
    engine = await make_engine(max_batch_sequences=2)
    with pytest.raises(InvalidRequest) as err:
        engine.submit(GOOD, DecodingParams(strategy="beam", beam_size=3, max_new_tokens=5))
    assert err.value.field == "beam_size"


async def test_full_queue_is_overloaded_with_retry_after(make_engine: MakeEngine) -> None:
    engine = await make_engine(max_batch_sequences=1, max_waiting=3)
    params = DecodingParams(max_new_tokens=40, ignore_eos=True)
    accepted: list[Job] = []
    with pytest.raises(Overloaded) as err:
        for _ in range(10):  # nothing awaits in between, so the queue only fills
            accepted.append(engine.submit(GOOD, params))
    assert err.value.code == "overloaded"
    assert err.value.retry_after >= 1
    assert 3 <= len(accepted) <= 4  # the engine thread may have admitted one already
    for job in accepted:
        assert (await job.result()).completion_tokens == 40
    await still_serves(engine)


def patch_decode(engine: Engine, monkeypatch: pytest.MonkeyPatch, hook: Any) -> list[set[str]]:
    """Run `hook(call_number, logits, batch) -> logits` on every engine decode step's
    output; returns the ids of the jobs in the batch at each call."""
    model = engine.runner.model
    original = model.decode_step
    batches: list[set[str]] = []

    def decode_step(tokens: Any, cache: Any) -> Any:
        if threading.current_thread() is not engine._thread:  # a solo() reference run
            return original(tokens, cache)
        batch = engine._batch
        assert batch is not None
        batches.append({s.job.id for s in batch.unique_seqs()})
        return hook(len(batches), original(tokens, cache), batch)

    monkeypatch.setattr(model, "decode_step", decode_step)
    return batches


def mixed_inputs() -> list[tuple[TaskInput, DecodingParams]]:
    return [
        (TaskInput("translate", TEXTS[i], target_lang="fr"), p)
        for i, p in enumerate([
            DecodingParams(max_new_tokens=20, ignore_eos=True),
            DecodingParams(strategy="sample", seed=3, max_new_tokens=20, ignore_eos=True),
            DecodingParams(strategy="beam", beam_size=2, max_new_tokens=8),
            DecodingParams(max_new_tokens=15, no_repeat_ngram_size=2),
        ])
    ]


async def test_a_failing_step_fails_only_the_batch_it_ran(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def hook(call: int, logits: Any, batch: Any) -> Any:
        if call == 3:
            raise RuntimeError("injected device fault")
        return logits

    batches = patch_decode(engine, monkeypatch, hook)
    first = [engine.submit(inp, p) for inp, p in mixed_inputs()]
    await wait_until(lambda: len(batches) >= 3)
    late = [engine.submit(inp, p) for inp, p in mixed_inputs()]
    outcomes = await asyncio.gather(*(j.result() for j in first + late), return_exceptions=True)
    failed = {j.id for j, o in zip(first + late, outcomes, strict=True)
              if isinstance(o, ExecutionError)}
    assert failed and failed == batches[2]
    assert all(isinstance(o, ExecutionError) or not isinstance(o, BaseException)
               for o in outcomes)
    assert "injected device fault" in next(
        o.message for o in outcomes if isinstance(o, ExecutionError)
    )
    for (inp, p), job, done in zip(mixed_inputs() * 2, first + late, outcomes, strict=True):
        if job.id not in failed and p.strategy != "sample":
            assert_same(done, solo(engine, inp, p))  # type: ignore[arg-type]
    await still_serves(engine)


@pytest.mark.parametrize("victim", [0, 1, 2], ids=["greedy", "seeded-sample", "beam"])
async def test_non_finite_logits_fail_only_their_row(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, victim: int
) -> None:
    inputs = mixed_inputs()
    jobs: list[Job] = []

    def hook(call: int, logits: Any, batch: Any) -> Any:
        if call == 2:
            rows = [i for i, s in enumerate(batch.seqs) if s is not None and s.job is jobs[victim]]
            logits[rows[-1]] = float("nan")
        return logits

    patch_decode(engine, monkeypatch, hook)
    with Gate(engine, "step"):  # all four are admitted together, by one step
        jobs.extend(engine.submit(inp, p) for inp, p in inputs)
    outcomes = await asyncio.gather(*(j.result() for j in jobs), return_exceptions=True)
    for i, ((inp, p), done) in enumerate(zip(inputs, outcomes, strict=True)):
        if i == victim:
            assert isinstance(done, ExecutionError)
            assert "non-finite" in done.message
        elif p.strategy != "sample":
            assert_same(done, solo(engine, inp, p))  # type: ignore[arg-type]
        else:
            assert not isinstance(done, BaseException)
    await wait_until(lambda: engine._batch is None)
    await still_serves(engine)
