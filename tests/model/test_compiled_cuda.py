"""Compiled encoder and decode steps on a CUDA device (inductor's Triton kernels; run by
scripts/gpu_check.sh, skipped without a GPU): they compute what the eager model
computes, in a batch that changes shape, and greedy generation gives the same tokens."""

from __future__ import annotations

import copy

import pytest
import torch

from model.generation import generate
from model.sampling import DecodingParams
from model.sora import Sora
from model.tokenizer import SoraTokenizer
from tests.model.test_layers_cache import greedy_logits, sources

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


def pad(model: Sora, srcs: list[list[int]]) -> torch.Tensor:
    width = max(len(s) for s in srcs)
    out = torch.full((len(srcs), width), model.config.pad_id, dtype=torch.long)
    for i, s in enumerate(srcs):
        out[i, : len(s)] = torch.tensor(s)
    return out.to(CUDA)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@torch.inference_mode()
def test_cuda_compiled_steps_equal_eager(
    tiny_model: Sora, tiny_tokenizer: SoraTokenizer, dtype: torch.dtype
) -> None:
    torch._dynamo.reset()
    eager = copy.deepcopy(tiny_model).to(CUDA, dtype)
    compiled = copy.deepcopy(eager).compile_for_inference()
    assert compiled._compiled_decode is not None and compiled._compiled_encode is not None
    atol = 1e-4 if dtype == torch.float32 else 5e-2
    runs = []
    for model in (eager, compiled):
        srcs = sources(model, [5, 30, 3, 9, 17], seed=3)
        valid = pad(model, srcs) != model.config.pad_id
        enc = model.encode(pad(model, srcs), valid)  # packed: short and long rows mixed
        cache = model.prefill(pad(model, srcs[:2]), capacity=3)
        tokens = torch.full((2,), model.config.bos_id, device=CUDA)
        out = greedy_logits(model, cache, tokens, 4)
        late = model.prefill(pad(model, srcs[2:]))
        cache = type(cache).concat([cache, late])
        tokens = torch.cat([out[-1].argmax(-1),
                            torch.full((3,), model.config.bos_id, device=CUDA)])
        out += greedy_logits(model, cache, tokens, 5)
        runs.append((enc, out))
    (enc_e, out_e), (enc_c, out_c) = runs
    torch.testing.assert_close(enc_c.float(), enc_e.float(), atol=atol, rtol=0)
    for e, c in zip(out_e, out_c, strict=True):
        torch.testing.assert_close(c.float(), e.float(), atol=atol, rtol=0)
    if dtype == torch.float32:
        params = DecodingParams(max_new_tokens=10)
        batch = [tiny_tokenizer.source_ids("translate", t, "de")
                 for t in ("Hello world", "The quick brown fox jumps over the lazy dog.")]
        a = generate(eager, tiny_tokenizer, batch, params)
        b = generate(compiled, tiny_tokenizer, batch, params)
        assert [r.token_ids for r in b] == [r.token_ids for r in a]
    torch._dynamo.reset()
