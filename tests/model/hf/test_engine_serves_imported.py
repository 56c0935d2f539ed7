"""The serving engine runs imported models through the same calls as Sora's own
(prompting via `SoraTokenizer.source_ids`, prefill, shared-batch decode steps with rows
parked and refilled, beam groups): concurrent requests of mixed lengths come out as
transformers' generate() makes them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch

from cli.main import main as sora
from model.checkpoint import Checkpoint
from model.sampling import DecodingParams
from service.engine.config import EngineConfig
from service.engine.core_client import CoreClient
from service.engine.engine import Engine
from service.engine.request import TaskInput
from tests.model.hf.parity import hf_generate

pytest.importorskip("transformers")

TEXTS = ["the cat sat on the mat", "we like tea", "my brother plays music in the old house",
         "she reads a long book", "he drinks cold water"]


@pytest.mark.parametrize("family", ["marian", "marian_sep", "flan", "bart"])
async def test_engine_output_equals_generate(family: str, request: pytest.FixtureRequest) -> None:
    ckpt: Checkpoint = request.getfixturevalue(family)
    hf: torch.nn.Module = request.getfixturevalue(f"{family}_hf")
    task = "translate" if "translate" in ckpt.manifest["tasks"] else "summarize"
    inputs = [TaskInput(task=task, text=t, target_lang="de" if task == "translate" else None,
                        source_lang="en") for t in TEXTS]
    cfg = ckpt.model.config
    config = EngineConfig(warmup=False, device="cpu", compile="off", max_batch_sequences=6)
    engine = Engine(ckpt, config, name=family)
    await engine.start()
    try:
        for beams in (1, 4):
            params = DecodingParams(strategy="beam" if beams > 1 else "greedy",
                                    max_new_tokens=12, early_stopping=True)
            done = await asyncio.gather(*(engine.generate(i, params) for i in inputs))
            for inp, completion in zip(inputs, done, strict=True):
                src = [ckpt.tokenizer.source_ids(task, inp.text, inp.target_lang,
                                                 source_lang="en")]
                want = hf_generate(hf, src, cfg.pad_id, cfg.eos_id, 12, beams)[0]
                assert completion.text == ckpt.tokenizer.decode(want), (beams, inp.text)
    finally:
        await engine.drain(timeout=10.0)


async def test_engine_core_process_serves_an_imported_marian(
    marian: Checkpoint, marian_hf: torch.nn.Module
) -> None:
    """The engine-core process's client tokenizes with the manifest's prompting and
    decodes with the target side's tokenizer, as the in-process engine does."""
    assert marian.path is not None
    config = EngineConfig(warmup=False, device="cpu", compile="off")
    client = CoreClient(marian.path, config, name="marian", version="1")
    await client.start()
    try:
        inputs = [TaskInput(task="translate", text=t, target_lang="de") for t in TEXTS[:3]]
        params = DecodingParams(max_new_tokens=12)
        done = await asyncio.gather(*(client.generate(i, params) for i in inputs))
    finally:
        await client.drain(timeout=10.0)
    cfg, tok = marian.model.config, marian.tokenizer
    src = [tok.source_ids("translate", i.text, "de") for i in inputs]
    want = hf_generate(marian_hf, src, cfg.pad_id, cfg.eos_id, 12, 1)
    assert [c.text for c in done] == [tok.decode(w) for w in want]


async def test_engine_serves_separate_vocabularies_as_sora_generate_prints(
    marian_sep: Checkpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Marian model with separate source and target vocabularies: the engine's texts,
    whole and streamed (the incremental detokenizer on the target side), are what
    `sora generate` prints, greedy and beam-4."""
    assert marian_sep.path is not None
    inputs = [TaskInput(task="translate", text=t, target_lang="de") for t in TEXTS]
    engine = Engine(marian_sep, EngineConfig(warmup=False, device="cpu", compile="off"),
                    name="marian_sep")
    await engine.start()
    try:
        for strategy, beam in (("greedy", []), ("beam", ["--beam-size", "4"])):
            capsys.readouterr()
            assert sora(["generate", "--checkpoint", str(marian_sep.path), "--device", "cpu",
                         "--task", "translate", "--target-lang", "de", "--strategy", strategy,
                         *beam, "--max-new-tokens", "12", *TEXTS]) == 0
            printed = capsys.readouterr().out.split("\n")[:-1]
            params = DecodingParams(strategy=strategy, max_new_tokens=12, early_stopping=True)
            done = await asyncio.gather(*(engine.generate(i, params) for i in inputs))
            streamed = await asyncio.gather(*(
                _deltas(engine.submit(i, params, stream=True)) for i in inputs))
            assert [c.text for c in done] == printed, strategy
            assert ["".join(s) for s in streamed] == printed, strategy
            assert len(set(printed)) > 1
    finally:
        await engine.drain(timeout=10.0)


async def _deltas(job: Any) -> list[str]:
    return [d.text async for d in job.deltas()]
