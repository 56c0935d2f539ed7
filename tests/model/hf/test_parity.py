"""Imported models compute what transformers computes: teacher-forced logits on a
padded batch within 1e-4 (fp32), and generate()'s greedy and beam-4 tokens, alone and
in a batch of mixed lengths."""

from __future__ import annotations

import copy

import pytest
import torch

from model.checkpoint import Checkpoint
from tests.model.hf.parity import assert_logits_match, hf_generate, sora_generate
from tests.model.test_compiled_model import needs_compiler

pytest.importorskip("transformers")

TEXTS = ["the cat sat on the mat", "we like tea", "my brother plays music in the old house"]
# family -> (imported checkpoint fixture, transformers model fixture)
FAMILIES = {"marian": ("marian", "marian_hf"), "t5": ("t5", "t5_hf"), "flan": ("flan", "flan_hf"),
            "bart": ("bart", "bart_hf"), "nllb": ("nllb", "nllb_hf"),
            "mbart": ("mbart", "mbart_hf"), "marian_sep": ("marian_sep", "marian_sep_hf")}


def sources(ckpt: Checkpoint) -> list[list[int]]:
    """Every task the model serves, on inputs of different lengths."""
    tok = ckpt.tokenizer
    if "translate" not in ckpt.manifest["tasks"]:  # a summarizer
        return [tok.source_ids("summarize", t) for t in [*TEXTS, "the weather is nice today"]]
    out = [tok.source_ids("translate", t, "de", source_lang="en") for t in TEXTS]
    if "summarize" in ckpt.manifest["tasks"]:
        out.append(tok.source_ids("summarize", "the weather is nice today"))
    if "answer" in ckpt.manifest["tasks"]:
        out.append(tok.source_ids("answer", "who sat", context="the cat sat on the mat"))
    return out


def forced(ckpt: Checkpoint) -> int | None:
    """The token generation must start with for German (NLLB's deu_Latn), if any."""
    ids = ckpt.tokenizer.forced_ids("translate", "de")
    return ids[0] if ids else None


@pytest.fixture(params=sorted(FAMILIES))
def pair(request: pytest.FixtureRequest) -> tuple[Checkpoint, torch.nn.Module]:
    ckpt, hf = FAMILIES[request.param]
    return request.getfixturevalue(ckpt), request.getfixturevalue(hf)


def test_logits_match(pair: tuple[Checkpoint, torch.nn.Module]) -> None:
    ckpt, hf = pair
    tok = ckpt.tokenizer
    targets = [tok.encode_target(t) for t in ("die katze", "wir mögen grünen tee", "ein")]
    src = sources(ckpt)
    assert_logits_match(ckpt, hf, src, (targets * 2)[: len(src)])


@pytest.mark.parametrize("beams", [1, 4])
def test_generation_matches_alone_and_batched(
    pair: tuple[Checkpoint, torch.nn.Module], beams: int
) -> None:
    ckpt, hf = pair
    cfg = ckpt.model.config
    src = sources(ckpt)
    first = forced(ckpt)
    expected = hf_generate(hf, src, cfg.pad_id, cfg.eos_id, 12, beams, first)
    assert sora_generate(ckpt, src, 12, beams, first) == expected
    assert len({len(e) for e in expected}) > 1  # some end (eos), some reach the limit
    for one, want in zip(src, expected, strict=True):
        assert sora_generate(ckpt, [one], 12, beams, first) == [want]
        assert hf_generate(hf, [one], cfg.pad_id, cfg.eos_id, 12, beams, first) == [want]


@pytest.mark.slow  # compiling costs one to two minutes per model on 2 cores
@needs_compiler
def test_compiled_generation_matches(pair: tuple[Checkpoint, torch.nn.Module]) -> None:
    """Compiled decode steps and encoder (`Sora.compile_for_inference`) generate what
    transformers generates, greedy and beam-4, in a batch of mixed lengths."""
    ckpt, hf = pair
    compiled = copy.copy(ckpt)
    torch._dynamo.reset()
    try:
        compiled.model = copy.deepcopy(ckpt.model).compile_for_inference()
        cfg = ckpt.model.config
        src = sources(ckpt)
        for beams in (1, 4):
            assert sora_generate(compiled, src, 12, beams, forced(ckpt)) == \
                hf_generate(hf, src, cfg.pad_id, cfg.eos_id, 12, beams, forced(ckpt))
    finally:
        torch._dynamo.reset()
