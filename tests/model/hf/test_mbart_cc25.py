"""Imported mBART-cc25 (MBartTokenizer's layout): `text </s> src_code` in, the decoder
starting from the target's code; generation as transformers' generate() with that
decoder_start_token_id, served alike, fine-tuned on targets as shift_tokens_right makes
them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from cli.main import main
from model.checkpoint import Checkpoint
from model.generation import generate
from model.sampling import DecodingParams
from model.training.batching import collate
from model.training.data.records import TranslateRecord
from model.training.finetune import encode_records
from service.engine.config import EngineConfig
from service.engine.core_client import CoreClient
from service.engine.request import TaskInput
from tests.model.hf.parity import cpu_engine, hf_generate, sora_generate

transformers = pytest.importorskip("transformers")

TEXTS = ["the cat sat on the mat", "we like tea", "my brother plays music in the old house",
         "she reads a long book"]


def hf_tokenizer(directory: Path, src: str, tgt: str) -> object:
    return transformers.MBartTokenizer.from_pretrained(directory, src_lang=src, tgt_lang=tgt)


def test_source_ids_are_mbart_tokenizers(mbart_cc25: Checkpoint, mbart_cc25_dir: Path) -> None:
    tok = mbart_cc25.tokenizer
    for iso, code in (("en", "en_XX"), ("de", "de_DE")):
        theirs = hf_tokenizer(mbart_cc25_dir, code, "fr_XX")
        for text in TEXTS:
            assert tok.source_ids("translate", text, "fr", source_lang=iso) == \
                theirs(text).input_ids
    assert tok.forced_ids("translate", "de") == [tok.token_id("de_DE")]
    prompting = tok.prompting
    assert prompting.forced_start and prompting.suffix == ["</s>", "{source}"]
    assert (mbart_cc25.manifest["architecture"], mbart_cc25.model.config.bos_id) == ("mbart", 0)


def test_mbart50_keeps_its_layout(mbart: Checkpoint) -> None:
    assert not mbart.tokenizer.prompting.forced_start
    assert mbart.tokenizer.prompting.prefix == ["{source}"]


def cc25_sources(ckpt: Checkpoint, target: str = "de") -> list[list[int]]:
    return [ckpt.tokenizer.source_ids("translate", t, target, source_lang="en") for t in TEXTS]


@pytest.mark.parametrize("beams", [1, 4])
def test_generation_matches_alone_and_batched(
    mbart_cc25: Checkpoint, mbart_cc25_hf: torch.nn.Module, beams: int
) -> None:
    cfg, tok = mbart_cc25.model.config, mbart_cc25.tokenizer
    src = cc25_sources(mbart_cc25)
    start = tok.token_id("de_DE")
    expected = hf_generate(mbart_cc25_hf, src, cfg.pad_id, cfg.eos_id, 12, beams, start=start)
    assert sora_generate(mbart_cc25, src, 12, beams, start) == expected
    assert len({len(e) for e in expected}) > 1  # some end (eos), some reach the limit
    for one, want in zip(src, expected, strict=True):
        assert sora_generate(mbart_cc25, [one], 12, beams, start) == [want]


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_each_row_starts_from_its_own_target(mbart_cc25: Checkpoint, strategy: str) -> None:
    tok = mbart_cc25.tokenizer
    targets = ["de", "fr", "de", "fr"]
    src = [tok.source_ids("translate", t, lang, source_lang="en")
           for t, lang in zip(TEXTS, targets, strict=True)]
    first = [tok.forced_ids("translate", lang) for lang in targets]
    params = DecodingParams(strategy=strategy, max_new_tokens=10)  # type: ignore[arg-type]
    mixed = generate(mbart_cc25.model, tok, src, params, first)
    alone = [generate(mbart_cc25.model, tok, [s], params, [f])[0] for s, f in zip(src, first,
                                                                                  strict=True)]
    assert [r.token_ids for r in mixed] == [r.token_ids for r in alone]
    # The same source (cc25's does not name the target) goes where its start token says.
    into_fr = generate(mbart_cc25.model, tok, [src[0]], params, [first[1]])[0]
    assert into_fr.token_ids != alone[0].token_ids


def test_fine_tuning_targets_are_shift_tokens_rights(
    mbart_cc25: Checkpoint, mbart_cc25_dir: Path
) -> None:
    """Labels `text </s> tgt_code` and decoder input `tgt_code text </s>`, as
    MBartTokenizer(text_target=...) and shift_tokens_right make them."""
    from transformers.models.mbart.modeling_mbart import shift_tokens_right

    pairs = [("we like tea", "wir mögen grünen tee", "en", "de"),
             ("die katze sitzt auf der matte", "the cat sat on the mat", "de", "en")]
    records = [TranslateRecord(s, t, sl, tl) for s, t, sl, tl in pairs]
    ex = encode_records(mbart_cc25.tokenizer, records, 64, 64)
    cfg = mbart_cc25.model.config
    batch = collate([ex.src[i] for i in range(2)], [ex.tgt[i] for i in range(2)], cfg.pad_id,
                    cfg.bos_id, cfg.eos_id, [0, 1], wrap_start=True)
    codes = {"en": "en_XX", "de": "de_DE"}
    for i, (source, target, sl, tl) in enumerate(pairs):
        theirs = hf_tokenizer(mbart_cc25_dir, codes[sl], codes[tl])
        enc = theirs(source, text_target=target, return_tensors="pt")
        n = enc.labels.shape[1]
        assert batch.src[i, : enc.input_ids.shape[1]].tolist() == enc.input_ids[0].tolist()
        assert batch.labels[i, :n].tolist() == enc.labels[0].tolist()
        assert batch.tgt[i, :n].tolist() == shift_tokens_right(enc.labels, cfg.pad_id)[0].tolist()


def cli_outputs(ckpt: Checkpoint, target: str, strategy: str,
                capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["generate", "--checkpoint", str(ckpt.path), "--target-lang", target,
                 "--source-lang", "en", "--max-new-tokens", "12", "--strategy", strategy,
                 *TEXTS]) == 0
    return capsys.readouterr().out.splitlines()


async def test_engine_serves_what_sora_generate_prints(
    mbart_cc25: Checkpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    async with cpu_engine(mbart_cc25, "cc25") as engine:
        for strategy in ("greedy", "beam"):
            params = DecodingParams(strategy=strategy, max_new_tokens=12)  # type: ignore[arg-type]
            for target in ("de", "fr"):
                inputs = [TaskInput("translate", t, target_lang=target, source_lang="en")
                          for t in TEXTS]
                done = await asyncio.gather(*(engine.generate(i, params) for i in inputs))
                assert [c.text for c in done] == cli_outputs(mbart_cc25, target, strategy,
                                                             capsys)


async def test_engine_core_process_serves_it(
    mbart_cc25: Checkpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    assert mbart_cc25.path is not None
    client = CoreClient(mbart_cc25.path, EngineConfig(warmup=False, device="cpu", compile="off"),
                        name="cc25", version="1")
    await client.start()
    try:
        inputs = [TaskInput("translate", t, target_lang="fr", source_lang="en") for t in TEXTS]
        done = await asyncio.gather(*(client.generate(i, DecodingParams(max_new_tokens=12))
                                      for i in inputs))
    finally:
        await client.drain(timeout=10.0)
    assert [c.text for c in done] == cli_outputs(mbart_cc25, "fr", "greedy", capsys)
