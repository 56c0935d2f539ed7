"""An imported T5 / Flan-T5: its text prefixes and manifest (its logits and
generations: test_parity.py)."""

from __future__ import annotations

import pytest

from model.checkpoint import Checkpoint
from model.tokenizer import TokenizerError

pytest.importorskip("transformers")


def test_prefixes(flan: Checkpoint) -> None:
    tok = flan.tokenizer
    eos = [tok.token_id("</s>")]
    assert tok.source_ids("translate", "we like tea", "de", source_lang="en") == \
        tok.encode("translate English to German: we like tea") + eos
    # T5 translates from English only: the source is inferred from the target.
    assert tok.source_ids("translate", "we like tea", "de") == \
        tok.encode("translate English to German: we like tea") + eos
    assert tok.source_ids("summarize", "we like tea") == tok.encode("summarize: we like tea") + eos
    assert tok.source_ids("answer", "who", context="we like tea") == \
        tok.encode("question: who context: we like tea") + eos


def test_a_source_it_cannot_infer(flan: Checkpoint) -> None:
    with pytest.raises(TokenizerError, match="this model needs source_lang to translate into "
                                             "'en'"):
        flan.tokenizer.source_ids("translate", "wir mögen tee", "en")


def test_manifest(flan: Checkpoint, t5: Checkpoint) -> None:
    m = flan.manifest
    assert m["architecture"] == "t5"
    assert m["tasks"] == ["answer", "summarize", "translate"]
    assert m["languages"] == ["de", "en", "fr", "ro"]
    assert m["language_pairs"] == [["en", "de"], ["en", "fr"], ["en", "ro"]]
    assert flan.model.config.activation == "gated-gelu"
    assert flan.model.config.d_attention == 12  # 2 heads of 6, d_model 16
    assert t5.model.config.activation == "relu"
