"""An imported MarianMT (OPUS-MT) model: its tokenizers, Moses-normalized sources and
manifest (its logits and generations: test_parity.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from model.checkpoint import MANIFEST, Checkpoint, load_checkpoint
from model.training.data.records import TranslateRecord
from model.training.finetune import encode_records

transformers = pytest.importorskip("transformers")

TEXTS = ["the cat sat on the mat", "we like tea", "my brother plays music in the old house"]
# Texts whose ids Moses' normalization changes (spaces around brackets, before : ; %, a dash).
MOSES_TEXTS = ["the cat ( sat ) on the mat", "we like tea , milk : water ; juice",
               "my brother—the dog", "we like 12 % tea"]


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


def test_sources_are_moses_normalized(marian: Checkpoint, marian_dir: Path) -> None:
    """The ids of MarianTokenizer.normalize's output (its source_lang's rules), which
    OPUS-MT was trained on; its __call__ leaves that step to the caller."""
    pytest.importorskip("sacremoses")
    hf_tok = transformers.MarianTokenizer.from_pretrained(marian_dir)
    assert marian.manifest["prompting"]["moses_lang"] == "en"
    records = [TranslateRecord(text, "die katze", "en", "de") for text in MOSES_TEXTS]
    tuning = encode_records(marian.tokenizer, records, max_src=64, max_tgt=64).src
    for i, text in enumerate(MOSES_TEXTS):
        ids = marian.tokenizer.source_ids("translate", text, "de")
        assert ids == hf_tok(hf_tok.normalize(text)).input_ids
        assert ids != hf_tok(text).input_ids
        assert tuning[i].tolist() == ids  # fine-tuning reads the same sources


def test_manifest_without_moses_lang(marian: Checkpoint, marian_dir: Path,
                                     tmp_path: Path) -> None:
    """A checkpoint imported before normalization existed: raw text, as before."""
    assert marian.path is not None
    old = shutil.copytree(marian.path, tmp_path / "old")
    manifest = json.loads((old / MANIFEST).read_text(encoding="utf-8"))
    del manifest["prompting"]["moses_lang"]
    (old / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    loaded = load_checkpoint(old)
    assert loaded.tokenizer.prompting.moses_lang is None
    assert loaded.tokenizer.prompting.to_dict() == manifest["prompting"]
    hf_tok = transformers.MarianTokenizer.from_pretrained(marian_dir)
    for text in MOSES_TEXTS:
        assert loaded.tokenizer.source_ids("translate", text, "de") == hf_tok(text).input_ids
