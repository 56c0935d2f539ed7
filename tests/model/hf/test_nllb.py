"""An imported NLLB (M2M100 architecture): language codes in, the target's code forced
first out (its logits and generations: test_parity.py)."""

from __future__ import annotations

import pytest

from model.checkpoint import Checkpoint
from model.generation import generate
from model.sampling import DecodingParams
from model.tokenizer import TokenizerError

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
