"""Greedy, sampling and beam search on the tiny model: exact, reproducible outcomes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from model.checkpoint import load_checkpoint, save_checkpoint
from model.generation import BeamSearch, GenerationResult, generate
from model.layers import OneDNNLinear
from model.sampling import (
    DecodingParams,
    SamplingBatch,
    banned_ngram_tokens,
    choose,
    greedy_tokens,
)
from model.sora import Sora
from model.tokenizer import SoraTokenizer


def sources(tok: SoraTokenizer) -> list[list[int]]:
    return [
        tok.source_ids("translate", "Hello world", target_lang="de"),
        tok.source_ids("summarize", "The meeting covered budgets, hiring and the roadmap."),
        tok.source_ids("answer", "Capital?", context="Paris is the capital of France."),
        tok.source_ids("translate", "你好 🙂", target_lang="fr"),
    ]


def constant_model(model: Sora, favourite: int, scale: float = 40.0) -> Sora:
    """A copy whose logits ignore the input: the final norm outputs a constant vector
    aligned with `favourite`'s (tied) embedding, so that token always wins."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.decoder_norm.weight.zero_()
        m.decoder_norm.bias.copy_(scale * m.embed.weight[favourite])
    return m


def run(model: Sora, tok: SoraTokenizer, **kw: object) -> list[GenerationResult]:
    return generate(model, tok, sources(tok), DecodingParams(**kw))  # type: ignore[arg-type]


def test_greedy_result_fields(tiny_model: Sora, tiny_tokenizer: SoraTokenizer) -> None:
    results = run(tiny_model, tiny_tokenizer, max_new_tokens=6)
    assert len(results) == 4
    for r in results:
        assert r.finish_reason in ("eos", "length")
        assert len(r.token_ids) <= 6
        assert tiny_tokenizer.eos_id not in r.token_ids
        assert r.text == tiny_tokenizer.decode(r.token_ids)
        assert r.logprob <= 0.0


def test_greedy_batch_equals_one_by_one(tiny_model: Sora, tiny_tokenizer: SoraTokenizer) -> None:
    params = DecodingParams(max_new_tokens=8)
    together = generate(tiny_model, tiny_tokenizer, sources(tiny_tokenizer), params)
    for src, r in zip(sources(tiny_tokenizer), together, strict=True):
        (alone,) = generate(tiny_model, tiny_tokenizer, [src], params)
        assert alone.token_ids == r.token_ids
        assert alone.logprob == pytest.approx(r.logprob, abs=1e-4)


def test_empty_input(tiny_model: Sora, tiny_tokenizer: SoraTokenizer) -> None:
    assert generate(tiny_model, tiny_tokenizer, [], DecodingParams()) == []


def test_finish_reasons(tiny_model: Sora, tiny_tokenizer: SoraTokenizer) -> None:
    eos = tiny_tokenizer.eos_id
    eager = constant_model(tiny_model, eos)
    for r in run(eager, tiny_tokenizer, max_new_tokens=5):
        assert (r.token_ids, r.finish_reason) == ([], "eos")
        assert r.logprob == pytest.approx(0.0, abs=1e-3)  # eos is near-certain
    for r in run(constant_model(tiny_model, 100), tiny_tokenizer, max_new_tokens=5):
        assert (r.token_ids, r.finish_reason) == ([100] * 5, "length")


def test_min_new_tokens(tiny_model: Sora, tiny_tokenizer: SoraTokenizer) -> None:
    eager = constant_model(tiny_model, tiny_tokenizer.eos_id)
    for r in run(eager, tiny_tokenizer, max_new_tokens=10, min_new_tokens=3):
        assert len(r.token_ids) == 3 and r.finish_reason == "eos"
        assert tiny_tokenizer.eos_id not in r.token_ids


def test_ignore_eos_gives_exactly_max_new_tokens(
    tiny_model: Sora, tiny_tokenizer: SoraTokenizer
) -> None:
    eager = constant_model(tiny_model, tiny_tokenizer.eos_id)
    for strategy in ("greedy", "sample"):
        for r in run(eager, tiny_tokenizer, strategy=strategy, max_new_tokens=7, ignore_eos=True):
            assert len(r.token_ids) == 7 and r.finish_reason == "length"
            assert tiny_tokenizer.eos_id not in r.token_ids


def test_no_repeat_ngram(tiny_model: Sora, tiny_tokenizer: SoraTokenizer) -> None:
    repeater = constant_model(tiny_model, 100)
    (plain,) = generate(repeater, tiny_tokenizer, sources(tiny_tokenizer)[:1],
                        DecodingParams(max_new_tokens=12))
    assert plain.token_ids == [100] * 12
    for n in (1, 2, 3):
        for r in run(repeater, tiny_tokenizer, max_new_tokens=12, no_repeat_ngram_size=n):
            grams = [tuple(r.token_ids[i : i + n]) for i in range(len(r.token_ids) - n + 1)]
            assert len(r.token_ids) == 12
            assert len(grams) == len(set(grams)), f"repeated {n}-gram in {r.token_ids}"


def test_banned_ngram_tokens() -> None:
    history = torch.tensor([5, 6, 7, 5, 6])
    assert banned_ngram_tokens(history, 3).tolist() == [7]  # "5 6" was followed by 7
    assert banned_ngram_tokens(history, 2).tolist() == [7]  # "6" was followed by 7
    assert sorted(banned_ngram_tokens(history, 1).tolist()) == [5, 5, 6, 6, 7]
    assert banned_ngram_tokens(history, 6).numel() == 0


def test_sampling_same_seed_same_output(tiny_model: Sora, tiny_tokenizer: SoraTokenizer) -> None:
    kw = {"strategy": "sample", "max_new_tokens": 12, "temperature": 1.5, "ignore_eos": True}
    first = run(tiny_model, tiny_tokenizer, seed=7, **kw)
    again = run(tiny_model, tiny_tokenizer, seed=7, **kw)
    other = run(tiny_model, tiny_tokenizer, seed=8, **kw)
    assert [r.token_ids for r in first] == [r.token_ids for r in again]
    assert [r.token_ids for r in first] != [r.token_ids for r in other]
    greedy = run(tiny_model, tiny_tokenizer, max_new_tokens=12, ignore_eos=True)
    assert [r.token_ids for r in first] != [r.token_ids for r in greedy]


@pytest.mark.parametrize("filt", [{"top_k": 1}, {"top_p": 1e-6}], ids=["top_k=1", "top_p~0"])
def test_filtered_sampling_equals_greedy(
    tiny_model: Sora, tiny_tokenizer: SoraTokenizer, filt: dict[str, object]
) -> None:
    greedy = run(tiny_model, tiny_tokenizer, max_new_tokens=10)
    sampled = run(tiny_model, tiny_tokenizer, strategy="sample", temperature=2.0,
                  max_new_tokens=10, **filt)
    assert [r.token_ids for r in sampled] == [r.token_ids for r in greedy]
    for s, g in zip(sampled, greedy, strict=True):
        assert s.finish_reason == g.finish_reason
        assert s.logprob == pytest.approx(g.logprob, abs=1e-4)


def test_beam_size_one_equals_greedy(tiny_model: Sora, tiny_tokenizer: SoraTokenizer) -> None:
    greedy = run(tiny_model, tiny_tokenizer, max_new_tokens=10)
    beam = run(tiny_model, tiny_tokenizer, strategy="beam", beam_size=1, max_new_tokens=10)
    for b, g in zip(beam, greedy, strict=True):
        assert (b.token_ids, b.finish_reason) == (g.token_ids, g.finish_reason)
        assert b.logprob == pytest.approx(g.logprob, abs=1e-4)


def test_beam_beats_greedy(tiny_model: Sora, tiny_tokenizer: SoraTokenizer) -> None:
    """Greedy is myopic: on some sources a wider beam finds a sequence whose total
    log-probability is higher. length_penalty=0 compares raw log-probabilities."""
    srcs = [tiny_tokenizer.source_ids("summarize", w) for w in
            ("alpha", "beta gamma", "Hello world", "Grüße", "你好", "🙂 ok", "Paris", "x y z")]
    greedy = generate(tiny_model, tiny_tokenizer, srcs, DecodingParams(max_new_tokens=6))
    beam = generate(tiny_model, tiny_tokenizer, srcs, DecodingParams(
        strategy="beam", beam_size=4, length_penalty=0.0, early_stopping=False, max_new_tokens=6))
    gains = [b.logprob - g.logprob for b, g in zip(beam, greedy, strict=True)]
    assert all(gain >= -1e-4 for gain in gains), gains  # never worse here
    assert max(gains) > 0.1, gains  # and strictly better somewhere
    for b in beam:
        assert b.text == tiny_tokenizer.decode(b.token_ids)


def test_beam_finish_reasons(tiny_model: Sora, tiny_tokenizer: SoraTokenizer) -> None:
    src = sources(tiny_tokenizer)[:1]
    eager = constant_model(tiny_model, tiny_tokenizer.eos_id)
    (r,) = generate(eager, tiny_tokenizer, src, DecodingParams(strategy="beam", beam_size=3))
    assert (r.token_ids, r.finish_reason) == ([], "eos")
    (r,) = generate(constant_model(tiny_model, 100), tiny_tokenizer, src,
                    DecodingParams(strategy="beam", beam_size=3, max_new_tokens=4))
    assert r.finish_reason == "length" and len(r.token_ids) == 4
    assert r.token_ids[0] == 100


def test_beam_nbest_is_ranked_and_distinct() -> None:
    """Three beams over a 5-token vocabulary (eos = 0): after one step each beam ends,
    so the n best are the three first tokens, ranked by length-normalized score."""
    search = BeamSearch(DecodingParams(strategy="beam", beam_size=3, max_new_tokens=3), 0)
    first = torch.log(torch.tensor([[0.05, 0.5, 0.3, 0.1, 0.05]] * 3))
    search.step(first)  # live beams: tokens 1, 2, 3
    # Nothing finished yet: the live beams stand in, best first.
    assert [h.tokens for h in search.nbest(2)] == [[1], [2]]
    ends = torch.full((3, 5), -1e9)
    ends[:, 0] = 0.0  # every beam ends now
    search.step(ends)
    best = search.nbest(3)
    assert [h.tokens for h in best] == [[1, 0], [2, 0], [3, 0]]
    assert [h.score for h in best] == sorted((h.score for h in best), reverse=True)
    assert best[0] == search.best()
    assert all(h.finish_reason == "eos" for h in best)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"min_new_tokens": 5, "max_new_tokens": 4}, "min_new_tokens"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"strategy": "beam", "beam_size": 17}, "beam_size"),
        ({"strategy": "nucleus"}, "strategy"),
        ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size"),
        ({"num_return_sequences": 0}, "num_return_sequences"),
        ({"num_return_sequences": 2}, "num_return_sequences"),
        ({"strategy": "beam", "beam_size": 2, "num_return_sequences": 3},
         "num_return_sequences"),
    ],
)
def test_invalid_params_name_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}: ") as info:
        DecodingParams(**kw)  # type: ignore[arg-type]
    assert info.value.field == field  # type: ignore[attr-defined]


@pytest.mark.parametrize("vocab", [8000, 7919, 1000, 64, 3])
def test_greedy_tokens_equal_argmax(vocab: int) -> None:
    g = torch.Generator().manual_seed(vocab)
    logits = torch.randn(33, vocab, generator=g)
    logits[0, :] = 1.0  # all tied: first index
    logits[1, vocab // 2] = logits[1, vocab - 1] = 50.0  # tie across blocks
    logits[2, vocab - 1] = float("nan")  # NaN wins, as in torch.argmax
    logits[3, :] = float("-inf")
    assert torch.equal(greedy_tokens(logits), logits.argmax(dim=-1))


def test_choose_logprob_is_the_log_softmax_of_the_token() -> None:
    logits = torch.randn(5, 300, generator=torch.Generator().manual_seed(0))
    batch = SamplingBatch.from_params([DecodingParams()] * 5, torch.device("cpu"))
    tokens, logprob = choose(logits, batch)
    want = logits.log_softmax(dim=-1)
    assert torch.equal(tokens, want.argmax(dim=-1))
    torch.testing.assert_close(logprob, want.max(dim=-1).values, rtol=0, atol=1e-5)


def test_sampling_batch_park_and_fill() -> None:
    """A parked row stops switching on per-batch passes; filling it takes the newcomer's
    settings, its own seeded generator included."""
    cpu = torch.device("cpu")
    batch = SamplingBatch.from_params([
        DecodingParams(strategy="sample", seed=1, no_repeat_ngram_size=2, min_new_tokens=3),
        DecodingParams(),
    ], cpu)
    assert batch.any_sample and batch.any_no_repeat and batch.any_eos_rule
    batch.park([0])
    assert not (batch.any_sample or batch.any_no_repeat or batch.any_eos_rule)
    assert batch.generators == [None, None] and batch.any_logprob
    new = SamplingBatch.from_params([DecodingParams(strategy="sample", seed=9, top_k=5,
                                                    return_logprob=False)], cpu)
    batch.fill([0], new)
    assert batch.any_sample and batch.top_k.tolist() == [5, 0]
    assert batch.generators[0] is new.generators[0] and batch.return_logprob == [False, True]


def test_column_major_decoder_keeps_outputs(
    tiny_model: Sora, tiny_tokenizer: SoraTokenizer, tmp_path: Path
) -> None:
    fast = copy.deepcopy(tiny_model).column_major_decoder()
    up = fast.decoder_layers[0].ffn.up.weight
    assert up.stride() == (1, up.shape[0])  # stored (in, out)
    assert fast.embed.weight.stride() == (1, fast.config.vocab_size)  # tied output
    enc = fast.encoder_layers[0].ffn.up.weight
    assert enc.stride() == (enc.shape[1], 1)  # the encoder runs at many rows: unchanged
    for kw in ({"max_new_tokens": 8}, {"strategy": "beam", "beam_size": 3, "max_new_tokens": 8}):
        want, got = run(tiny_model, tiny_tokenizer, **kw), run(fast, tiny_tokenizer, **kw)
        assert [r.token_ids for r in got] == [r.token_ids for r in want]
        for g, w in zip(got, want, strict=True):
            assert g.logprob == pytest.approx(w.logprob, abs=1e-4)
    # Loading weights keeps the layout; saving writes ordinary contiguous tensors.
    fast.load_state_dict(tiny_model.state_dict())
    assert fast.decoder_layers[0].ffn.up.weight.stride() == up.stride()
    path = save_checkpoint(tmp_path / "ckpt", fast, tiny_tokenizer, info={"name": "t"})
    loaded = load_checkpoint(path).model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in tiny_model.state_dict().items())


def test_without_logprob_same_tokens(tiny_model: Sora, tiny_tokenizer: SoraTokenizer) -> None:
    for kw in ({}, {"strategy": "sample", "seed": 3}, {"strategy": "beam", "beam_size": 2}):
        want = run(tiny_model, tiny_tokenizer, max_new_tokens=8, **kw)
        got = run(tiny_model, tiny_tokenizer, max_new_tokens=8, return_logprob=False, **kw)
        assert [r.token_ids for r in got] == [r.token_ids for r in want]
        assert all(r.logprob is None for r in got) and all(r.logprob for r in want)
    batch = SamplingBatch.from_params([DecodingParams(return_logprob=False)] * 2,
                                      torch.device("cpu"))
    tokens, logprob = choose(torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]]), batch)
    assert tokens.tolist() == [1, 0] and logprob is None


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
def test_onednn_keeps_outputs(tiny_model: Sora, tiny_tokenizer: SoraTokenizer) -> None:
    fast = copy.deepcopy(tiny_model).use_onednn()
    linears = [m for m in fast.decoder_layers.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is OneDNNLinear for m in linears)
    assert fast.state_dict().keys() == tiny_model.state_dict().keys()
    for kw in ({"max_new_tokens": 8}, {"strategy": "beam", "beam_size": 3, "max_new_tokens": 8}):
        want, got = run(tiny_model, tiny_tokenizer, **kw), run(fast, tiny_tokenizer, **kw)
        assert [r.token_ids for r in got] == [r.token_ids for r in want]
        for g, w in zip(got, want, strict=True):
            assert g.logprob == pytest.approx(w.logprob, abs=1e-4)
    src = torch.tensor([[5, 6, 7, 2], [8, 9, 2, 0]])
    tgt = torch.tensor([[1, 10, 11], [1, 12, 0]])
    with torch.inference_mode():
        torch.testing.assert_close(fast(src, tgt).logits, tiny_model(src, tgt).logits,
                                   atol=1e-4, rtol=1e-4)


def test_cross_keys_of_packed_sources(tiny_model: Sora) -> None:
    """Mixed source lengths: cross keys/values are projected from the real tokens only,
    equal to the padded projection wherever attention reads them."""
    src = torch.tensor([[5, 6, 7, 8, 9, 2], [5, 2, 0, 0, 0, 0], [7, 2, 0, 0, 0, 0]])
    valid = src != tiny_model.config.pad_id
    with torch.inference_mode():
        memory = tiny_model.encode(src, valid)
        cache = tiny_model.new_cache(memory, valid)
        for layer, k, v in zip(tiny_model.decoder_layers, cache.cross_k, cache.cross_v,
                               strict=True):
            want_k, want_v = layer.cross_attn.project_memory(memory)
            mask = valid[:, None, :, None]
            torch.testing.assert_close(k * mask, want_k * mask)
            torch.testing.assert_close(v * mask, want_v * mask)
