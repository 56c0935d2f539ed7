"""Text clean-up for description text: line joining, whitespace, sentences, length ratios.

Debian descriptions are hard-wrapped at ~80 columns, so a paragraph arrives as several
lines. Chinese text is wrapped mid-word (there are no spaces), so joining lines must not
insert a space between two CJK characters.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

# Languages written without spaces between words: line joins and sentence ends differ.
CJK_LANGS = frozenset({"zh", "zh_CN", "zh_TW", "ja"})

# A bullet item starts a new block: "* foo", "- foo", "+ foo", "o foo", "1. foo", "a) foo".
_BULLET = re.compile(r"^\s*(?:[*\-+•·o]|\d{1,2}[.)]|[a-z][)])\s+")
# Latin-script sentence end: terminal punctuation (optionally closed by a quote or
# bracket), whitespace, then something that can start a sentence.
_LATIN_END = re.compile(r"(?<=[.!?…])([\"'»”)\]]?)\s+(?=[\"'«“(¿¡]?[A-ZÀ-ÖØ-ÞĀ-ſ0-9])")
_CJK_END = re.compile(r"(?<=[。！？!?])\s*")
# Words that end with a period without ending the sentence ("e.g. Foo", "z. B. Foo").
_ABBREVIATIONS = frozenset(
    {
        "e.g",
        "i.e",
        "etc",
        "vs",
        "cf",
        "approx",
        "incl",
        "resp",
        "mr",
        "mrs",
        "dr",
        "prof",
        "no",
        "nr",
        "ca",
        "bzw",
        "usw",
        "evtl",
        "ggf",
        "inkl",
        "bspw",
        "vgl",
        "sog",
        "u.a",
        "z.b",
        "d.h",
        "p.ex",
        "c.-à-d",
        "env",
        "p",
        "pp",
        "vol",
        "ver",
        "v",
        "ex",
        "fig",
        "st",
        "jr",
        "sr",
        "ing",
        "dipl",
        "max",
        "min",
        "tel",
    }
)


def _is_cjk(ch: str) -> bool:
    """True for CJK ideographs, kana, hangul and full-width punctuation."""
    code = ord(ch)
    return (
        0x3000 <= code <= 0x30FF  # CJK punctuation, hiragana, katakana
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xAC00 <= code <= 0xD7AF
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
    )


def normalize(text: str) -> str:
    """NFC-normalize and collapse every whitespace run to one space."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def join_lines(lines: Sequence[str]) -> str:
    """Join wrapped lines into one line; no space is inserted between two CJK characters."""
    out = ""
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if out and not (_is_cjk(out[-1]) and _is_cjk(line[0])):
            out += " "
        out += line
    return normalize(out)


def blocks(lines: Sequence[str]) -> list[str]:
    """Group a paragraph's lines into blocks: the lead text and one block per bullet item.

    List items rarely end with a full stop, so they are split apart before sentence
    splitting; otherwise a whole list would count as one "sentence".
    """
    groups: list[list[str]] = []
    for line in lines:
        if not groups or _BULLET.match(line):
            groups.append([line])
        else:
            groups[-1].append(line)
    return [text for text in (join_lines(g) for g in groups) if text]


def _ends_with_abbreviation(text: str) -> bool:
    """True when the text before a split point ends with an abbreviation or an initial."""
    word = text.rsplit(" ", 1)[-1].rstrip(".").lstrip("(\"'«“").lower()
    if len(word) == 1 and word.isalpha():  # an initial: "J. Smith", "z. B."
        return True
    return word in _ABBREVIATIONS


def split_sentences(text: str, lang: str = "en") -> list[str]:
    """Split one block of text into sentences, with a punctuation rule per script.

    A deliberately simple splitter: both sides of a translation pair go through the same
    rules, and a pair is only kept when both sides give the same number of sentences,
    so systematic quirks cancel out and odd cases are dropped rather than misaligned.
    """
    text = normalize(text)
    if not text:
        return []
    if lang in CJK_LANGS:
        parts = _CJK_END.split(text)
        return [p.strip() for p in parts if p.strip()]
    sentences: list[str] = []
    start = 0
    for match in _LATIN_END.finditer(text):
        head = text[start : match.start()]
        if _ends_with_abbreviation(head):
            continue
        sentences.append((head + match.group(1)).strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def segments(lines: Sequence[str], lang: str = "en") -> list[str]:
    """The sentences of a paragraph: its bullet blocks, each split into sentences."""
    return [s for block in blocks(lines) for s in split_sentences(block, lang)]


def length_units(text: str, lang: str) -> float:
    """A rough length comparable across languages: characters, CJK ones weighted ~3x."""
    if lang in CJK_LANGS:
        return sum(3.0 if _is_cjk(ch) else 1.0 for ch in text)
    return float(len(text))


def has_letters(text: str) -> bool:
    """True when the text contains at least one letter (drops "-", "1.", "...")."""
    return any(ch.isalpha() for ch in text)
