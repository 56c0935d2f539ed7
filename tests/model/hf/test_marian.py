"""An imported MarianMT (OPUS-MT) model: its tokenizers and manifest (its logits and
generations: test_parity.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.checkpoint import Checkpoint

transformers = pytest.importorskip("transformers")

TEXTS = ["the cat sat on the mat", "we like tea", "my brother plays music in the old house"]


def test_tokenizer_matches_marian_tokenizer(marian: Checkpoint, marian_dir: Path) -> None:
    hf_tok = transformers.MarianTokenizer.from_pretrained(marian_dir)
    for text in [*TEXTS, "unknown ÄÖÜ words  with   spaces"]:
        assert marian.tokenizer.source_ids("translate", text, "de") == hf_tok(text).input_ids
    expected = hf_tok(text_target="die katze sitzt").input_ids[:-1]
    assert marian.tokenizer.encode_target("die katze sitzt") == expected


def test_separate_spm_round_trip(marian: Checkpoint) -> None:
    """Source and target SentencePiece models differ: each side's text comes back."""
    tok = marian.tokenizer
    assert tok.target is not None
    german = "das wetter ist heute schön"
    assert tok.decode(tok.encode_target(german)) == german
    assert tok.encode_target(german) != tok.encode(german)  # the sides segment apart
    english = "the weather is nice today"
    assert tok.tokenizer.decode(tok.encode(english)) == english


def test_manifest(marian: Checkpoint, marian_dir: Path) -> None:
    m = marian.manifest
    assert m["architecture"] == "marian"
    assert m["tasks"] == ["translate"]
    assert m["languages"] == ["de", "en"]
    assert m["language_pairs"] == [["en", "de"]]
    assert m["prompting"]["target_tokens"] == {}
    prov = m["provenance"]
    assert prov["model_type"] == "marian"
    assert prov["transformers_version"] == transformers.__version__
    assert set(prov["sha256"]) >= {"config.json", "vocab.json", "source.spm", "target.spm"}
