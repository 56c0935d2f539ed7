"""forced_bos_token_id and forced_eos_token_id (BART-large-cnn): every output starts
with <s>, and one that reaches max_new_tokens ends with eos, as transformers'
ForcedBOS/ForcedEOSTokenLogitsProcessor make them, greedy, beam, sampling and in the
engine."""

from __future__ import annotations

import asyncio

import pytest
import torch

from cli.main import main
from model.checkpoint import Checkpoint
from model.generation import generate
from model.sampling import DecodingParams
from service.engine.request import TaskInput
from tests.model.hf.parity import cpu_engine, hf_generate, sora_generate

pytest.importorskip("transformers")

TEXTS = ["the cat sat on the mat", "we like tea", "my brother plays music in the old house",
         "the weather is nice today"]
LIMIT = 8


def test_the_importer_records_them(bart_cnn: Checkpoint, bart: Checkpoint) -> None:
    assert bart_cnn.model.config.forced_eos and not bart.model.config.forced_eos
    assert bart_cnn.manifest["prompting"]["forced_first"] == "<s>"
    assert "forced_first" not in bart.manifest["prompting"]
    bos = bart_cnn.tokenizer.token_id("<s>")
    assert bart_cnn.tokenizer.forced_ids("summarize", None) == [bos]
    assert bart.tokenizer.forced_ids("summarize", None) == []


def summaries(ckpt: Checkpoint) -> list[list[int]]:
    return [ckpt.tokenizer.source_ids("summarize", t) for t in TEXTS]


@pytest.mark.parametrize("beams", [1, 4])
def test_generation_matches_alone_and_batched(
    bart_cnn: Checkpoint, bart_cnn_hf: torch.nn.Module, bart: Checkpoint, beams: int
) -> None:
    cfg = bart_cnn.model.config
    src = summaries(bart_cnn)
    [bos] = bart_cnn.tokenizer.forced_ids("summarize", None)
    expected = hf_generate(bart_cnn_hf, src, cfg.pad_id, cfg.eos_id, LIMIT, beams, forced=bos)
    assert all(e[0] == bos for e in expected)
    assert sora_generate(bart_cnn, src, LIMIT, beams, forced=bos) == expected
    # Outputs that reach the limit end one token early, with eos; without forcing
    # (the same weights, imported without it) they would run to the limit.
    assert LIMIT - 1 in {len(e) for e in expected}
    assert LIMIT not in {len(e) for e in expected}
    assert LIMIT in {len(o) for o in sora_generate(bart, src, LIMIT, beams)}
    for one, want in zip(src, expected, strict=True):
        assert sora_generate(bart_cnn, [one], LIMIT, beams, forced=bos) == [want]


def test_sampling_ends_every_output(bart_cnn: Checkpoint) -> None:
    # No eos before the last step: every output reaches it, and there it must end.
    params = DecodingParams(strategy="sample", max_new_tokens=LIMIT, min_new_tokens=LIMIT - 1)
    results = generate(bart_cnn.model, bart_cnn.tokenizer, summaries(bart_cnn), params)
    assert {(r.finish_reason, len(r.token_ids)) for r in results} == {("eos", LIMIT - 1)}


async def test_engine_serves_what_sora_generate_prints(
    bart_cnn: Checkpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    async with cpu_engine(bart_cnn, "cnn") as engine:
        for strategy in ("greedy", "beam", "sample"):
            # Mixed limits in one batch: each row is forced at its own last step.
            for limit in (LIMIT, LIMIT + 3):
                params = DecodingParams(strategy=strategy,  # type: ignore[arg-type]
                                        max_new_tokens=limit,
                                        min_new_tokens=limit - 1 if strategy == "sample" else 0)
                inputs = [TaskInput("summarize", t) for t in TEXTS]
                short = DecodingParams(strategy="greedy", max_new_tokens=3)
                done, *_ = await asyncio.gather(
                    asyncio.gather(*(engine.generate(i, params) for i in inputs)),
                    *(engine.generate(i, short) for i in inputs))
                if strategy == "sample":  # its draws differ: every output ends instead
                    assert {(c.finish_reason, c.completion_tokens) for c in done} == \
                        {("eos", limit - 1)}
                    continue
                assert main(["generate", "--checkpoint", str(bart_cnn.path), "--task",
                             "summarize", "--strategy", strategy, "--max-new-tokens",
                             str(limit), *TEXTS]) == 0
                assert [c.text for c in done] == capsys.readouterr().out.splitlines()
                assert {c.finish_reason for c in done} == {"eos"}
