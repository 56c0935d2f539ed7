"""Tokenizer: lossless round trips in every script, special tokens, streaming decode."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from model.tokenizer import (
    LANG_TOKENS,
    LANGUAGES,
    SPECIAL_TOKENS,
    TASK_TOKENS,
    TASKS,
    IncrementalDetokenizer,
    SoraTokenizer,
    TokenizerError,
)

TEXTS = [
    "Hello world, how are you?",
    "Grüße aus München: Straße, Bäume, Äpfel.",
    "L'été à Noël ? Très agréable, ça va « oui ».",
    "你好，世界！今天天气很好。",
    "🙂🚀👍🏽🇩🇪 👨‍👩‍👧‍👦",
    "Mixed: Hello 你好 Grüße 🙂 ça va? 日本語テキスト and Ελληνικά, русский.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n",
    "",
    "a",
    "Ω≈ç√∫˜µ≤≥÷ ⁰⁴⁵ ﷺ 𝕳𝖊𝖑𝖑𝖔 \u200b zero-width",
]


def random_texts(n: int, seed: int = 0) -> list[str]:
    """Strings mixing ASCII, Latin-1, CJK, emoji (4-byte UTF-8) and combining marks."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E), (0xC0, 0x17F), (0x4E00, 0x4FFF), (0x1F300, 0x1F64F), (0x300, 0x36F)]
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(1, 30)):
            lo, hi = rng.choice(ranges)
            chars.append(chr(rng.randint(lo, hi)))
        out.append("".join(chars))
    return out


@pytest.mark.parametrize("text", TEXTS + random_texts(20))
def test_round_trip(tiny_tokenizer: SoraTokenizer, text: str) -> None:
    ids = tiny_tokenizer.encode(text)
    assert tiny_tokenizer.special_ids["<unk>"] not in ids  # byte-level: nothing unknown
    assert tiny_tokenizer.decode(ids) == text


def test_batch_matches_single(tiny_tokenizer: SoraTokenizer) -> None:
    batch = tiny_tokenizer.encode_batch(TEXTS)
    assert batch == [tiny_tokenizer.encode(t) for t in TEXTS]
    assert tiny_tokenizer.decode_batch(batch) == TEXTS


def test_special_tokens(tiny_tokenizer: SoraTokenizer) -> None:
    tok = tiny_tokenizer
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
    assert set(tok.special_ids) == set(SPECIAL_TOKENS)
    assert len(tok.special_id_set) == len(SPECIAL_TOKENS)  # all distinct
    for task in TASKS:
        assert tok.tokenizer.id_to_token(tok.task_id(task)) == TASK_TOKENS[task]
    for lang in LANGUAGES:
        assert tok.tokenizer.id_to_token(tok.lang_id(lang)) == LANG_TOKENS[lang]
    # A special token's text in the input is one id, and decode skips it by default.
    ids = tok.encode("<translate> hi")
    assert ids[0] == tok.task_id("translate")
    assert tok.decode(ids) == " hi"
    assert tok.decode(ids, skip_special=False) == "<translate> hi"


def test_source_ids(tiny_tokenizer: SoraTokenizer) -> None:
    tok = tiny_tokenizer
    ids = tok.source_ids("translate", "Hello", target_lang="de")
    assert ids == [tok.task_id("translate"), tok.lang_id("de"), *tok.encode("Hello"), tok.eos_id]
    ids = tok.source_ids("answer", "Why?", context="Because.")
    assert ids == [tok.task_id("answer"), *tok.encode("Why?"), tok.sep_id,
                   *tok.encode("Because."), tok.eos_id]
    with pytest.raises(TokenizerError, match="translate needs a target language"):
        tok.source_ids("translate", "Hello")
    with pytest.raises(TokenizerError, match="unsupported language 'xx'"):
        tok.source_ids("translate", "Hello", target_lang="xx")
    with pytest.raises(TokenizerError, match="unknown task 'poem'"):
        tok.source_ids("poem", "Hello")


def test_save_and_load(tiny_tokenizer: SoraTokenizer, tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    tiny_tokenizer.save(path)
    loaded = SoraTokenizer.from_file(path)
    assert loaded.special_ids == tiny_tokenizer.special_ids
    assert loaded.encode(TEXTS[5]) == tiny_tokenizer.encode(TEXTS[5])


@pytest.mark.parametrize("text", TEXTS + random_texts(40, seed=1))
def test_incremental_detokenizer(tiny_tokenizer: SoraTokenizer, text: str) -> None:
    ids = tiny_tokenizer.encode(text)
    # Special ids in the stream (bos, eos) are skipped, as the final decode skips them.
    stream = [tiny_tokenizer.bos_id, *ids, tiny_tokenizer.eos_id]
    pieces = list(IncrementalDetokenizer(tiny_tokenizer).stream(stream))
    assert all("\ufffd" not in p for p in pieces)
    assert all(pieces)  # stream() yields no empty pieces
    assert "".join(pieces) == tiny_tokenizer.decode(stream) == text


def test_incremental_holds_back_partial_characters(tiny_tokenizer: SoraTokenizer) -> None:
    # "🙂" is 4 UTF-8 bytes; with this small vocabulary it spans several tokens, and no
    # piece may appear before the last of them.
    ids = tiny_tokenizer.encode("🙂")
    assert len(ids) > 1
    detok = IncrementalDetokenizer(tiny_tokenizer)
    assert [detok.push(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert detok.push(ids[-1]) == "🙂"
    assert detok.flush() == ""
