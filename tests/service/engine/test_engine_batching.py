"""Continuous batching changes nothing about a request's output: the same tokens come
out alone or among 64 others of every task, length and decoding setting, joining and
leaving the running batch mid-flight."""

from __future__ import annotations

import asyncio

import torch
from conftest import TEXTS, MakeEngine, Recorder, assert_same, solo
from support import Gate, wait_until

from model.sampling import DecodingParams
from service.engine import Engine, Job, TaskInput
from tests.model.test_compiled_model import needs_compiler

LANGS = ("de", "fr", "es", "zh", "it", "en")


def mixed_request(i: int) -> tuple[TaskInput, DecodingParams]:
    """Request `i` of a varied load: tasks, languages, lengths and strategies."""
    text = TEXTS[i % len(TEXTS)]
    if i % 3 == 0:
        inp = TaskInput("translate", text, target_lang=LANGS[i % len(LANGS)])
    elif i % 3 == 1:
        inp = TaskInput("summarize", text)
    else:
        inp = TaskInput("answer", TEXTS[9], context=text)
    n = 3 + (i * 7) % 38  # 3..40 new tokens
    kind = i % 8
    if kind == 5:
        params = DecodingParams(
            strategy="sample", max_new_tokens=n, temperature=0.8, top_k=50, top_p=0.9, seed=i
        )
    elif kind == 6:
        params = DecodingParams(strategy="beam", beam_size=2 + i % 2, max_new_tokens=4 + i % 13)
    elif kind == 7:
        params = DecodingParams(max_new_tokens=n, ignore_eos=True)
    elif kind == 4:
        params = DecodingParams(max_new_tokens=n, min_new_tokens=n // 2, no_repeat_ngram_size=2)
    else:
        params = DecodingParams(max_new_tokens=n)
    return inp, params


async def test_outputs_equal_solo_under_mixed_concurrent_load(engine: Engine) -> None:
    await mixed_load_equals_solo(engine)


@needs_compiler
async def test_compiled_engine_outputs_equal_solo_under_mixed_load(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(compile="wait")  # compiled before start() returns
    model = engine.runner.model
    assert engine.compiled and model._compiled_decode is not None
    assert model._compiled_encode is not None
    # The warm-up compiled every graph this load needs: rows parked and refilled, beams
    # appended, batches of every size.
    torch.compiler.set_stance("fail_on_recompile")
    try:
        await mixed_load_equals_solo(engine)
    finally:
        torch.compiler.set_stance("default")


async def mixed_load_equals_solo(engine: Engine) -> None:
    rec = Recorder()
    engine.add_listener(rec)
    requests = [mixed_request(i) for i in range(64)]
    # The first group is long (ignore_eos) so later groups join a batch mid-decode.
    requests[0] = (requests[0][0], DecodingParams(max_new_tokens=60, ignore_eos=True))
    jobs: list[Job] = []
    # Each group arrives after two more decode steps of the batch (counted, not timed).
    with Gate(engine.runner, "step") as decode:
        for start in range(0, 64, 8):
            jobs.extend(engine.submit(inp, p) for inp, p in requests[start : start + 8])
            limit = decode.passed + 2
            decode.hold(lambda b, limit=limit: decode.passed >= limit)
            await wait_until(lambda limit=limit: decode.held == 1 and decode.passed == limit)
    results = await asyncio.gather(*(j.result() for j in jobs))

    # Rows were admitted into a batch already decoding, and several rows decoded together.
    assert any(s.running > s.batch_size for s in rec.steps("prefill"))
    assert max(s.batch_size for s in rec.steps("decode")) > 8

    for i, ((inp, params), done) in enumerate(zip(requests, results, strict=True)):
        if params.strategy == "sample":
            alone = await engine.generate(inp, params)
            assert (done.text, done.completion_tokens) == (alone.text, alone.completion_tokens), i
        else:
            assert_same(done, solo(engine, inp, params), (i, params))
    assert engine._batch is None
    assert len(engine.scheduler) == 0


async def test_ended_rows_are_reused_in_place(make_engine: MakeEngine) -> None:
    """A request that ends parks its row; the next newcomer takes that row without the
    batch (or its cache) being rebuilt, and every output still equals its solo run."""
    engine = await make_engine(max_waiting_steps=0)  # a newcomer joins at the next step
    inp = TaskInput("translate", TEXTS[1], target_lang="de")
    long = DecodingParams(max_new_tokens=40, ignore_eos=True)
    short = DecodingParams(max_new_tokens=3, ignore_eos=True)
    # Decode steps wait while a row is parked: the test looks at the batch as it is.
    with Gate(engine.runner, "step", lambda b: b.parked is not None) as decode:
        jobs = [engine.submit(inp, long) for _ in range(4)]
        jobs.append(engine.submit(TaskInput("summarize", TEXTS[4]), short))
        await wait_until(lambda: decode.held == 1)
        batch = engine._batch
        assert batch is not None and batch.size == 5 and batch.live == 4
        self_k = batch.cache.self_k[0]

        newcomer = (TaskInput("answer", TEXTS[9], context=TEXTS[3]),
                    DecodingParams(max_new_tokens=30, ignore_eos=True))
        jobs.append(engine.submit(*newcomer))
        decode.hold(lambda b: b.parked is None)  # ... now once the newcomer is in
        await wait_until(lambda: decode.held == 1 and batch.parked is None)
        assert engine._batch is batch and batch.size == 5 and batch.live == 5
        assert batch.cache.self_k[0] is self_k  # filled in place, not concatenated

    results = await asyncio.gather(*(j.result() for j in jobs))
    expected = [(inp, long)] * 4 + [(TaskInput("summarize", TEXTS[4]), short), newcomer]
    for i, (done, (task, params)) in enumerate(zip(results, expected, strict=True)):
        assert_same(done, solo(engine, task, params), i)


async def test_a_beam_joining_drops_parked_rows(engine: Engine) -> None:
    """A beam needs consecutive rows, so it is appended; the copy that appending makes
    leaves parked rows out, and the batch never computes more rows than it runs."""
    inp = TaskInput("translate", TEXTS[1], target_lang="de")
    long = DecodingParams(max_new_tokens=40, ignore_eos=True)
    beam = (TaskInput("summarize", TEXTS[4]), DecodingParams(strategy="beam", beam_size=3,
                                                             max_new_tokens=10))
    with Gate(engine.runner, "step", lambda b: b.parked is not None) as decode:
        jobs = [engine.submit(inp, long) for _ in range(4)]
        jobs.append(engine.submit(inp, DecodingParams(max_new_tokens=3, ignore_eos=True)))
        await wait_until(lambda: decode.held == 1)  # a row parked
        jobs.append(engine.submit(*beam))
        decode.hold(lambda b: b.live == 7)  # ... now once the beam has joined
        await wait_until(lambda: decode.held == 1 and engine.running == 7)
        batch = engine._batch
        assert batch is not None and batch.size == batch.live == 7 and batch.parked is None
    results = await asyncio.gather(*(j.result() for j in jobs))
    assert_same(results[-1], solo(engine, *beam))
    assert_same(results[0], solo(engine, inp, long))


async def test_seeded_sampling_is_reproducible_and_seed_dependent(engine: Engine) -> None:
    inp = TaskInput("translate", TEXTS[2], target_lang="fr")
    params = DecodingParams(strategy="sample", max_new_tokens=30, ignore_eos=True, seed=7)
    same = await asyncio.gather(*(engine.generate(inp, params) for _ in range(4)))
    assert len({c.text for c in same}) == 1
    others = await asyncio.gather(*(
        engine.generate(inp, DecodingParams(
            strategy="sample", max_new_tokens=30, ignore_eos=True, seed=s
        )) for s in (8, 9, 10)
    ))
    assert any(c.text != same[0].text for c in others)


async def test_default_params_fit_the_model(engine: Engine) -> None:
    """No DecodingParams: the default length is capped by the model's target length."""
    done = await engine.generate(TaskInput("summarize", TEXTS[8]))
    assert 0 < done.completion_tokens <= engine.max_new_tokens
