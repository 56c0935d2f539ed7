"""What callers receive: long documents split and reassembled in order, streamed deltas
that add up to the final text without broken characters, and stats records."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import torch
from conftest import TEXTS, Recorder, assert_same, solo

from model.sampling import DecodingParams
from service.engine import Cancelled, Engine, TaskInput
from service.engine.admission import PREFIX_TOKENS
from service.engine.segment import split_document

DOCUMENT = "\n\n".join([
    f"{TEXTS[0]} {TEXTS[1]} {TEXTS[3]}",
    TEXTS[5],
    f"{TEXTS[2]}\n{TEXTS[4]}",
])


async def collect(job: Any) -> list[str]:
    return [d.text async for d in job.deltas()]


@pytest.mark.parametrize("task", ["translate", "summarize"])
async def test_long_document_is_segmented_and_reassembled_in_order(
    engine: Engine, task: str
) -> None:
    lang = "de" if task == "translate" else None
    params = DecodingParams(max_new_tokens=12)
    tok = engine.tokenizer
    assert len(tok.source_ids(task, DOCUMENT, lang)) > engine.max_source_tokens
    segments = split_document(
        DOCUMENT, lambda s: len(tok.encode(s)), engine.max_source_tokens - PREFIX_TOKENS
    )
    # Paragraph breaks are kept; the long first paragraph is split inside.
    assert [s.joiner for s in segments] == [" ", "\n\n", "\n\n", "\n", ""]
    expected = "".join(
        solo(engine, TaskInput(task, s.text, target_lang=lang), params).text + s.joiner
        for s in segments
    )
    inp = TaskInput(task, DOCUMENT, target_lang=lang)
    done, streamed = await asyncio.gather(
        engine.generate(inp, params), collect(engine.submit(inp, params, stream=True))
    )
    assert done.segments == len(segments)
    assert done.text == expected
    assert "".join(streamed) == expected
    assert done.prompt_tokens == sum(
        len(tok.source_ids(task, s.text, lang)) for s in segments
    )


def script_output(engine: Engine, monkeypatch: pytest.MonkeyPatch, job_ids: set[str],
                  target: list[int]) -> None:
    """Rows of jobs `job_ids` emit `target` then eos; the real decoder still runs."""
    model = engine.runner.model
    original = model.decode_step
    eos = engine.tokenizer.eos_id

    def decode_step(tokens: torch.Tensor, cache: Any) -> torch.Tensor:
        logits = original(tokens, cache)
        batch = engine._batch
        if threading.current_thread() is not engine._thread or batch is None:
            return logits
        for row, seq in enumerate(batch.seqs):
            if seq is not None and seq.job.id in job_ids:
                n = int(batch.n_generated[row])
                logits[row] = -1e4
                logits[row, target[n] if n < len(target) else eos] = 0.0
        return logits

    monkeypatch.setattr(model, "decode_step", decode_step)


async def test_streaming_never_splits_a_character(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    wanted = "你好，世界！🙂🚀 👍🏽"
    target = engine.tokenizer.encode(wanted)
    # The byte-level tokens really do end inside characters.
    assert any(engine.tokenizer.decode(target[:i]).endswith("\ufffd") for i in range(len(target)))
    ids: set[str] = set()
    script_output(engine, monkeypatch, ids, target)
    params = DecodingParams(max_new_tokens=40)
    inp = TaskInput("translate", TEXTS[6], target_lang="zh")
    job = engine.submit(inp, params, stream=True)
    ids.add(job.id)
    plain = engine.submit(TaskInput("summarize", TEXTS[7]), params, stream=True)
    pieces, plain_pieces = await asyncio.gather(collect(job), collect(plain))
    done = await job.result()
    assert done.text == wanted and done.finish_reason == "eos"
    assert "".join(pieces) == wanted
    assert len(pieces) >= 8  # token by token, not all at the end
    assert not any("\ufffd" in p for p in pieces)
    assert "".join(plain_pieces) == (await plain.result()).text


async def test_streamed_deltas_add_up_to_the_text(engine: Engine) -> None:
    cases = [
        (TaskInput("translate", t, target_lang="fr"), DecodingParams(max_new_tokens=n))
        for t, n in zip(TEXTS, (5, 9, 14, 20, 30, 12), strict=False)
    ]
    cases.append((TaskInput("summarize", TEXTS[8]),
                  DecodingParams(strategy="beam", beam_size=2, max_new_tokens=10)))
    jobs = [engine.submit(inp, p, stream=True) for inp, p in cases]
    streams = await asyncio.gather(*(collect(j) for j in jobs))
    for (inp, p), job, pieces in zip(cases, jobs, streams, strict=True):
        done = await job.result()
        assert "".join(pieces) == done.text
        assert_same(done, solo(engine, inp, p))


async def test_stats_records_are_sane(engine: Engine) -> None:
    rec = Recorder()
    engine.add_listener(rec)
    params = DecodingParams(max_new_tokens=16)
    inputs = [TaskInput("translate", t, target_lang="it") for t in TEXTS[:8]]
    jobs = [engine.submit(inp, params, protocol="grpc") for inp in inputs]
    results = await asyncio.gather(*(j.result() for j in jobs))
    cancelled = engine.submit(inputs[0], DecodingParams(max_new_tokens=60, ignore_eos=True))
    cancelled.cancel()
    with pytest.raises(Cancelled):
        await cancelled.result()

    # Each record is emitted before its caller is told: a caller never looks too early.
    requests = rec.requests()
    assert len(requests) == 9
    for r in requests[:8]:
        assert r.model == "tiny" and r.task == "translate" and r.protocol == "grpc"
        assert r.outcome in ("eos", "length")
        assert r.ttft_s is not None
        assert 0 <= r.queue_s <= r.ttft_s <= r.e2e_s
        assert r.tpot_s is None or r.tpot_s >= 0
    assert sorted(r.generated_tokens for r in requests[:8]) == sorted(
        c.completion_tokens for c in results
    )
    assert sorted(r.prompt_tokens for r in requests[:8]) == sorted(
        c.prompt_tokens for c in results
    )
    assert requests[8].outcome == "cancelled"
    decode = rec.steps("decode")
    prefill = rec.steps("prefill")
    assert max(s.batch_size for s in decode) > 1
    assert all(s.duration_s >= 0 and s.tokens == s.batch_size for s in decode)
    assert sum(s.tokens for s in prefill) >= sum(c.prompt_tokens for c in results)
    assert all(0 < s.batch_size <= s.running for s in prefill)
    assert all(s.waiting >= 0 for s in decode + prefill)


async def test_without_logprob_same_text(engine: Engine) -> None:
    """Requests that skip the log-probability run beside requests that want it: all get
    the answers they get alone, and only the former carry no logprob."""
    inputs = [TaskInput("translate", t, "de") for t in TEXTS[:4]]
    want = DecodingParams(max_new_tokens=10)
    skip = DecodingParams(max_new_tokens=10, return_logprob=False)
    cases = [(inp, want if i % 2 else skip) for i, inp in enumerate(inputs)]
    done = await asyncio.gather(*(engine.generate(inp, p) for inp, p in cases))
    for (inp, p), d in zip(cases, done, strict=True):
        ref = solo(engine, inp, want)
        assert (d.text, d.finish_reason) == (ref.text, ref.finish_reason)
        if p.return_logprob:
            assert_same(d, ref)
        else:
            assert d.logprob is None
