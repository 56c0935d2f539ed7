"""An imported MarianMT (OPUS-MT) model computes what transformers computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.checkpoint import Checkpoint
from tests.model.hf.parity import assert_logits_match, hf_generate, sora_generate

transformers = pytest.importorskip("transformers")

TEXTS = ["the cat sat on the mat", "we like tea", "my brother plays music in the old house"]


def sources(ckpt: Checkpoint) -> list[list[int]]:
    return [ckpt.tokenizer.source_ids("translate", t, "de") for t in TEXTS]


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


def test_logits_match(marian: Checkpoint, marian_hf: torch.nn.Module) -> None:
    tok = marian.tokenizer
    targets = [tok.encode_target(t) for t in ("die katze", "wir mögen grünen tee", "ein")]
    assert_logits_match(marian, marian_hf, sources(marian), targets)


@pytest.mark.parametrize("beams", [1, 4])
def test_generation_matches_alone_and_batched(
    marian: Checkpoint, marian_hf: torch.nn.Module, beams: int
) -> None:
    cfg = marian.model.config
    src = sources(marian)
    expected = hf_generate(marian_hf, src, cfg.pad_id, cfg.eos_id, 12, beams)
    assert sora_generate(marian, src, 12, beams) == expected
    for one, want in zip(src, expected, strict=True):
        assert sora_generate(marian, [one], 12, beams) == [want]
        assert hf_generate(marian_hf, [one], cfg.pad_id, cfg.eos_id, 12, beams) == [want]


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
