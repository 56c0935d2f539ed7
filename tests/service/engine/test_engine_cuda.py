"""The engine on a CUDA device (run by scripts/gpu_check.sh; skipped without a GPU):
batched CUDA output equals one request alone, CUDA fp32 equals CPU fp32, bf16 stays
within bf16's tolerance of fp32, and a real CUDA out-of-memory error in prefill is
split and retried without losing or changing any request."""

from __future__ import annotations

import asyncio

import pytest
import torch
from conftest import TEXTS, MakeEngine, assert_same, solo, source_ids

from model.sampling import DecodingParams
from service.engine import Engine, TaskInput

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

INPUTS = [
    *(TaskInput("translate", t, target_lang=lang)
      for t, lang in zip(TEXTS[:6], ["de", "fr", "en", "de", "es", "fr"], strict=True)),
    TaskInput("summarize", TEXTS[8]),
    TaskInput("answer", TEXTS[9], context="Paris is the capital of France."),
]
GREEDY = DecodingParams(max_new_tokens=12)


async def test_cuda_batch_equals_each_request_alone(make_engine: MakeEngine) -> None:
    engine = await make_engine(device="cuda", dtype="float32")
    assert engine.device.type == "cuda"
    done = await asyncio.gather(*(engine.generate(i, GREEDY) for i in INPUTS))
    for inp, d in zip(INPUTS, done, strict=True):
        assert_same(d, solo(engine, inp, GREEDY), inp)


async def test_cuda_fp32_equals_cpu_fp32(make_engine: MakeEngine) -> None:
    cpu = await make_engine(device="cpu", dtype="float32")
    gpu = await make_engine(device="cuda", dtype="float32")
    a = await asyncio.gather(*(cpu.generate(i, GREEDY) for i in INPUTS))
    b = await asyncio.gather(*(gpu.generate(i, GREEDY) for i in INPUTS))
    for inp, x, y in zip(INPUTS, a, b, strict=True):
        assert y.text == x.text, inp
        assert abs(y.logprob - x.logprob) < 1e-3 * max(1.0, abs(x.logprob)), inp


def teacher_forced(engine: Engine, inp: TaskInput, ids: list[int]) -> tuple[float, float]:
    """CPU fp32's log-probability of `ids` after the source, and the largest gap at any
    step between its best token and the token in `ids` (0 where they agree)."""
    model = engine.runner.model
    cfg = model.config
    src = torch.tensor([source_ids(engine, inp)])
    tgt = torch.tensor([[cfg.bos_id, *ids]])
    with torch.inference_mode():
        logp = model(src, tgt[:, :-1]).logits.float().log_softmax(-1)[0]
    chosen = logp.gather(-1, tgt[0, 1:, None])[:, 0]
    return float(chosen.sum()), float((logp.max(-1).values - chosen).max())


async def test_cuda_bf16_within_tolerance_of_cpu_fp32(make_engine: MakeEngine) -> None:
    cpu = await make_engine(device="cpu", dtype="float32")
    gpu = await make_engine(device="cuda", dtype="bfloat16")
    assert gpu.dtype == torch.bfloat16
    params = DecodingParams(max_new_tokens=12, ignore_eos=True)
    done = await asyncio.gather(*(gpu.generate(i, params) for i in INPUTS))
    for inp, d in zip(INPUTS, done, strict=True):
        ref = solo(gpu, inp, params)
        assert len(ref.token_ids) == 12, inp
        logprob, gap = teacher_forced(cpu, inp, ref.token_ids)
        # bf16 keeps 8 mantissa bits: each greedy pick is fp32's best or within a hair
        # of it, and the sequence score agrees with fp32's rescoring of the same tokens.
        assert gap < 0.1, (inp, gap)
        assert abs(ref.logprob - logprob) < 0.02 * 12 + 0.05, (inp, ref.logprob, logprob)
        # The batched engine in bf16 scores like the request alone (bf16 kernels may
        # differ with the batch's shape, so the scores, not the texts, are compared).
        assert d.completion_tokens == 12 and d.logprob is not None, inp
        assert abs(d.logprob - ref.logprob) < 0.02 * 12 + 0.05, (inp, d.logprob, ref.logprob)


async def test_cuda_out_of_memory_in_prefill_splits_and_retries(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await make_engine(device="cuda", dtype="float32")
    prefill = engine.runner.prefill
    failed: list[int] = []

    def prefill_or_oom(seqs):  # type: ignore[no-untyped-def]
        if len(seqs) > 2:
            failed.append(len(seqs))
            # A real allocation failure from the CUDA caching allocator (1 PiB).
            torch.empty(2**50, dtype=torch.uint8, device=engine.device)
        return prefill(seqs)

    monkeypatch.setattr(engine.runner, "prefill", prefill_or_oom)
    expected = [solo(engine, i, GREEDY) for i in INPUTS]
    done = await asyncio.gather(*(engine.generate(i, GREEDY) for i in INPUTS))
    assert failed, "no prefill of more than two sequences was tried"
    for inp, d, ref in zip(INPUTS, done, expected, strict=True):
        assert_same(d, ref, inp)
    # The engine keeps serving at full size once memory allows it again.
    monkeypatch.setattr(engine.runner, "prefill", prefill)
    again = await asyncio.gather(*(engine.generate(i, GREEDY) for i in INPUTS))
    assert [d.text for d in again] == [r.text for r in expected]
