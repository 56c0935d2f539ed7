"""Imported NLLB (M2M100 architecture) and mBART-50: language codes in, the target's
code forced first out (their logits and generations: test_parity.py)."""

from __future__ import annotations

import pytest
import torch

from cli.main import main
from model.checkpoint import Checkpoint
from model.generation import generate
from model.sampling import DecodingParams
from model.tokenizer import TokenizerError
from tests.model.hf.parity import hf_generate

pytest.importorskip("transformers")


def test_source_codes_and_forced_target(nllb: Checkpoint) -> None:
    tok = nllb.tokenizer
    code = tok.token_id
    assert tok.source_ids("translate", "we like tea", "de", source_lang="en") == \
        [code("eng_Latn"), *tok.encode("we like tea"), code("</s>")]
    # No source language given: served without its code (NLLB cannot detect it).
    assert tok.source_ids("translate", "we like tea", "de") == \
        [*tok.encode("we like tea"), code("</s>")]
    assert tok.forced_ids("translate", "de") == [code("deu_Latn")]
    assert tok.forced_ids("summarize", None) == []
    with pytest.raises(TokenizerError, match="unsupported target language 'it'; expected one "
                                             "of de, en, fr"):
        tok.source_ids("translate", "we like tea", "it")


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_outputs_start_with_the_forced_code(nllb: Checkpoint, strategy: str) -> None:
    tok = nllb.tokenizer
    src = [tok.source_ids("translate", "we like tea", lang, source_lang="en")
           for lang in ("de", "fr")]
    forced = [tok.forced_ids("translate", lang) for lang in ("de", "fr")]
    results = generate(nllb.model, tok, src, DecodingParams(strategy=strategy, max_new_tokens=6),
                       forced)
    assert [r.token_ids[0] for r in results] == [f[0] for f in forced]
    assert all("_Latn" not in r.text for r in results)  # codes are special: not in the text


def test_manifest(nllb: Checkpoint) -> None:
    m = nllb.manifest
    assert (m["architecture"], m["tasks"], m["languages"]) == ("nllb", ["translate"],
                                                               ["de", "en", "fr"])
    assert "language_pairs" not in m  # any two of its languages
    cfg = nllb.model.config
    assert (cfg.norm_placement, cfg.positions, cfg.position_offset) == \
        ("pre", "sinusoidal-fairseq", 2)
    assert cfg.final_norms and not cfg.final_logits_bias and cfg.bos_id == cfg.eos_id


def test_sora_generate_forces_the_target_code(
    nllb: Checkpoint, nllb_hf: torch.nn.Module, capsys: pytest.CaptureFixture[str]
) -> None:
    assert nllb.path is not None
    assert main(["generate", "--checkpoint", str(nllb.path), "--target-lang", "fr",
                 "--source-lang", "en", "--max-new-tokens", "8", "we like tea"]) == 0
    tok, cfg = nllb.tokenizer, nllb.model.config
    src = [tok.source_ids("translate", "we like tea", "fr", source_lang="en")]
    want = hf_generate(nllb_hf, src, cfg.pad_id, cfg.eos_id, 8, 1, tok.token_id("fra_Latn"))
    assert capsys.readouterr().out == tok.decode(want[0]) + "\n"


def test_mbart50_codes(mbart: Checkpoint) -> None:
    tok = mbart.tokenizer
    assert tok.source_ids("translate", "we like tea", "de", source_lang="en") == \
        [tok.token_id("en_XX"), *tok.encode("we like tea"), tok.token_id("</s>")]
    assert tok.forced_ids("translate", "fr") == [tok.token_id("fr_XX")]
    m = mbart.manifest
    assert (m["architecture"], m["languages"]) == ("mbart", ["de", "en", "fr"])
    cfg = mbart.model.config
    assert (cfg.norm_placement, cfg.positions, cfg.embedding_norm, cfg.final_norms) == \
        ("pre", "learned", True, True)
