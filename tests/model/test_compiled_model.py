"""A compiled model (`Sora.compile_for_inference`: decode steps, encoder layers on packed
sources) computes what the eager one computes, in every batch shape the serving engine
makes, without compiling again after warm-up."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

import model.device as device_module
from model.device import compile_skipped, prepare_for_inference
from model.generation import generate
from model.layers import OneDNNLinear
from model.sampling import DecodingParams
from model.sora import Sora
from model.tokenizer import SoraTokenizer
from tests.model.test_layers_cache import ATOL, greedy_logits, solo, sources, src_tensor

needs_compiler = pytest.mark.skipif(
    compile_skipped(torch.device("cpu"), torch.float32) is not None,
    reason="torch.compile on CPU needs a C++ compiler",
)


@pytest.fixture(scope="module")
def compiled(tiny_model: Sora) -> Iterator[Sora]:
    """A compiled copy of the tiny model, warmed up (two graphs each: batch 1, batch n),
    its decoder's linear layers as oneDNN's (compiled as F.linear) on every CPU."""
    torch._dynamo.reset()
    yield copy.deepcopy(tiny_model).use_onednn().compile_for_inference()
    torch._dynamo.reset()


@needs_compiler
@torch.inference_mode()
def test_compiled_steps_equal_eager_in_a_changing_batch(tiny_model: Sora, compiled: Sora) -> None:
    # Rows at different positions, a row parked and refilled with a longer source, rows
    # selected away, new rows concatenated: every logit as the eager model's, and each
    # row as it is decoded alone.
    runs = []
    for model in (tiny_model, compiled):
        srcs = sources(model, [5, 12, 3, 9], seed=3)
        cache = model.prefill(src_tensor(model, srcs[:2]), capacity=3)
        tokens = torch.full((2,), model.config.bos_id)
        out = greedy_logits(model, cache, tokens, 4)
        late = model.prefill(src_tensor(model, srcs[2:3]))
        cache = type(cache).concat([cache, late])
        tokens = torch.cat([out[-1].argmax(-1), torch.tensor([model.config.bos_id])])
        out += greedy_logits(model, cache, tokens, 3)
        cache.free([0])
        cache.fill([0], model.prefill(src_tensor(model, srcs[3:4])))
        tokens = out[-1].argmax(-1)
        tokens[0] = model.config.bos_id
        out += greedy_logits(model, cache, tokens, 5)
        cache = cache.select(torch.tensor([2, 0]))
        out += greedy_logits(model, cache, out[-1].argmax(-1)[[2, 0]], 3)
        runs.append(out)
    for eager, fast in zip(*runs, strict=True):
        torch.testing.assert_close(fast, eager, atol=ATOL, rtol=0)
    # The refilled row (source 3, from its first token) against that source alone.
    alone = solo(tiny_model, sources(tiny_model, [5, 12, 3, 9], seed=3)[3], 8)
    refilled = torch.stack([lg[0] for lg in runs[1][7:12]] + [lg[1] for lg in runs[1][12:15]])
    torch.testing.assert_close(refilled, alone, atol=ATOL, rtol=0)


@needs_compiler
@torch.inference_mode()
def test_compiled_encoder_equals_eager(tiny_model: Sora, compiled: Sora) -> None:
    # Packed batches (short and long sources mixed) go through the compiled layers;
    # padded positions stay exactly zero, as eager encode() leaves them.
    for lengths, seed in (([3, 30, 7, 2, 19], 1), ([1, 40], 2), ([9, 2, 2, 2, 2, 2, 2], 3)):
        src = src_tensor(tiny_model, sources(tiny_model, lengths, seed=seed))
        valid = src != tiny_model.config.pad_id
        assert int(valid.sum()) <= 0.9 * valid.numel()  # the packed path
        eager = tiny_model.encode(src, valid)
        fast = compiled.encode(src, valid)
        torch.testing.assert_close(fast, eager, atol=ATOL, rtol=0)
        assert not fast[~valid].any()


@needs_compiler
def test_compiled_generation_equals_eager(
    tiny_model: Sora, compiled: Sora, tiny_tokenizer: SoraTokenizer
) -> None:
    srcs = sources(tiny_model, [4, 17, 9, 2, 30], seed=5)
    params = DecodingParams(max_new_tokens=12, ignore_eos=True)
    eager = generate(tiny_model, tiny_tokenizer, srcs, params)
    batched = generate(compiled, tiny_tokenizer, srcs, params)
    one_by_one = [generate(compiled, tiny_tokenizer, [s], params)[0] for s in srcs]
    assert [r.token_ids for r in batched] == [r.token_ids for r in eager]
    assert [r.token_ids for r in one_by_one] == [r.token_ids for r in eager]
    for a, b in zip(batched, eager, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-3)
    beam = DecodingParams(strategy="beam", beam_size=3, max_new_tokens=8)
    assert ([r.token_ids for r in generate(compiled, tiny_tokenizer, srcs[:2], beam)]
            == [r.token_ids for r in generate(tiny_model, tiny_tokenizer, srcs[:2], beam)])


@needs_compiler
@torch.inference_mode()
def test_no_compiling_after_warm_up(compiled: Sora) -> None:
    # Batch sizes, source lengths, capacities and staggered positions the warm-up never
    # saw: a recompile here would stall a serving engine for seconds.
    torch.compiler.set_stance("fail_on_recompile")
    try:
        for batch, capacity in ((1, 1), (2, 2), (7, 40), (33, 8), (1, 9), (5, 3)):
            srcs = sources(compiled, [3 + (7 * i) % 40 for i in range(batch)], seed=batch)
            cache = compiled.prefill(src_tensor(compiled, srcs), capacity=capacity)
            if batch > 2:
                cache.positions[1] = 2
                cache._sync()
            greedy_logits(compiled, cache, torch.full((batch,), compiled.config.bos_id), 11)
            # What a serving engine does to a running cache: rows parked and refilled,
            # selected (beams, compaction), joined by new rows.
            if batch > 1:
                cache.free([0])
                cache.fill([0], compiled.prefill(src_tensor(compiled, srcs[-1:])))
                greedy_logits(compiled, cache, torch.full((batch,), compiled.config.bos_id), 2)
                cache = cache.select(torch.arange(batch - 1, -1, -1))
                greedy_logits(compiled, cache, torch.full((batch,), compiled.config.bos_id), 2)
                cache = type(cache).concat([cache, compiled.prefill(src_tensor(compiled, srcs))])
                greedy_logits(compiled, cache, torch.full((2 * batch,), compiled.config.bos_id),
                              2)
                shortest = min(range(batch), key=lambda i: len(srcs[i]))
                cache = cache.select(torch.tensor([shortest]))  # one row, source trimmed
                greedy_logits(compiled, cache, torch.full((1,), compiled.config.bos_id), 2)
    finally:
        torch.compiler.set_stance("default")


@needs_compiler
def test_a_second_model_of_one_shape_reuses_the_graphs(tiny_model: Sora, compiled: Sora) -> None:
    # A registry serving two versions of one model: the second compiles nothing and
    # computes with its own weights, not the first one's. (Prepared as `compiled` is:
    # its layers' classes are part of what the graphs were compiled for.)
    other = copy.deepcopy(tiny_model).use_onednn()
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    eager = copy.deepcopy(other)
    torch.compiler.set_stance("fail_on_recompile")
    try:
        other.compile_for_inference()  # its warm-up runs the graphs `compiled` made
        srcs = sources(other, [4, 13, 8], seed=9)
        runs = []
        with torch.inference_mode():
            for model in (other, eager, compiled):
                cache = model.prefill(src_tensor(model, srcs))
                bos = torch.full((3,), model.config.bos_id)
                runs.append(greedy_logits(model, cache, bos, 6))
    finally:
        torch.compiler.set_stance("default")
    for mine, reference, first in zip(*runs, strict=True):
        torch.testing.assert_close(mine, reference, atol=ATOL, rtol=0)
        assert (mine - first).abs().max() > 1e-2


def test_prepare_for_inference_modes(
    tiny_model: Sora, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = copy.deepcopy(tiny_model)
    off = prepare_for_inference(model, compile="off")
    assert off._compiled_decode is None and off._compiled_encode is None
    with pytest.raises(ValueError, match="compile: expected one of background, wait, off"):
        prepare_for_inference(model, compile="yes")

    def broken(self: Sora) -> Sora:
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(Sora, "compile_for_inference", broken)
    # background compiles later, in the engine: nothing here.
    assert prepare_for_inference(model, compile="background")._compiled_decode is None
    with pytest.raises(RuntimeError, match="no C"):  # wait: a failure stops start-up
        prepare_for_inference(model, compile="wait")
    with caplog.at_level(logging.WARNING, logger="model.device"), pytest.raises(
        RuntimeError, match="no C"
    ):
        prepare_for_inference(model, compile="on")
    assert "compile=on is deprecated; use compile=wait" in caplog.text
    with pytest.raises(ValueError, match="compile=wait does not apply to int8"):
        prepare_for_inference(model, quantize=True, compile="wait")


@pytest.mark.parametrize("intel", [True, False])
def test_onednn_on_non_intel_cpus(
    tiny_model: Sora, monkeypatch: pytest.MonkeyPatch, intel: bool
) -> None:
    monkeypatch.setattr(device_module, "intel_cpu", lambda: intel)
    model = prepare_for_inference(copy.deepcopy(tiny_model), compile="off")
    kinds = {type(m) for m in model.decoder_layers.modules() if isinstance(m, torch.nn.Linear)}
    onednn = not intel and torch.backends.mkldnn.is_available()
    assert kinds == ({OneDNNLinear} if onednn else {torch.nn.Linear})
    assert (model._output_linear is not F.linear) == onednn
    if onednn:  # on a packed copy of the weight, packed again when the weight changes
        layer = model.decoder_layers[0].ffn.up
        x = torch.randn(3, layer.in_features)
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
        with torch.no_grad():
            layer.weight.mul_(2)
        torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
        twin = copy.deepcopy(model).decoder_layers[0].ffn.up
        assert twin.onednn.packed is None
        torch.testing.assert_close(twin(x), F.linear(x, layer.weight, layer.bias))


def test_where_background_compiling_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert "int8" in (compile_skipped(cpu, torch.float32, quantize=True) or "")
    assert "not cpu torch.bfloat16" in (compile_skipped(cpu, torch.bfloat16) or "")
    assert "not cuda" in (compile_skipped(torch.device("cuda"), torch.bfloat16) or "")
    monkeypatch.setattr(device_module.shutil, "which", lambda name: None)
    assert compile_skipped(cpu, torch.float32) == "no C++ compiler (g++, c++ or clang++) on PATH"
    monkeypatch.setattr(device_module.shutil, "which", lambda name: "/usr/bin/" + name)
    assert compile_skipped(cpu, torch.float32) is None


def test_failed_warm_up_leaves_the_model_eager(
    tiny_model: Sora, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = copy.deepcopy(tiny_model)

    def failing_compile(fn: object, **kwargs: object) -> object:
        def run(*args: object) -> object:
            raise RuntimeError("inductor failed")
        return run

    monkeypatch.setattr(torch, "compile", failing_compile)
    with pytest.raises(RuntimeError, match="inductor failed"):
        model.compile_for_inference()
    assert model._compiled_decode is None and model._compiled_encode is None
    src = src_tensor(model, sources(model, [6]))
    with torch.inference_mode():
        cache = model.prefill(src)
        assert model.decode_step(torch.tensor([model.config.bos_id]), cache).shape == (
            1, model.config.vocab_size)
