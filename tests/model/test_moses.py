"""Moses punctuation normalization: the rules' results, and the same output as
sacremoses' MosesPunctNormalizer (a dev dependency) for every language rule set."""

from __future__ import annotations

import pytest

from model.moses import normalize_punctuation

NBSP = "\u00a0"
LANGS = ("en", "de", "fr", "es", "cs")
TEXTS = [
    "“Hello,” she said — „really“… ",
    "He said \"yes\", then \"no\". And \"maybe\".",
    "« Bonjour »  tout le monde ! Ça va ?",
    f"«{NBSP}Salut{NBSP}» dit-il{NBSP}: oui{NBSP}; non{NBSP}? si{NBSP}!",
    f"Il a 1{NBSP}000{NBSP}000 euros, soit 12{NBSP}% de plus.",
    "Growth was 3,5 % or 3.5 %, up from 1,000.25 .",
    "word ( spaced ) out ,then : colon ; semi",
    "tabs\there\tand   repeated    spaces\r\n",
    "don´t, it’s, ‘quoted’, ‚low‘, ´´doubled´´",
    "``Penn'' style `quotes'",
    "A–B and A—B, a – range",
    f"nº{NBSP}5 at 20{NBSP}ºC, 3{NBSP}cm wide",
    "你好，世界。（测试）：好！",
    "Sie sagte: „Ja“, und ging.",
    "Er schrieb \"Ende\"...",
    "",
    "   ",
]


@pytest.mark.parametrize(("text", "lang", "expected"), [
    ("“Hello,” she said", "en", '"Hello," she said'),
    ('He said "yes", then "no".', "en", 'He said "yes," then "no."'),
    ('He said "yes", then "no".', "de", 'He said "yes", then "no".'),
    ('Er sagte "ja", dann', "de", 'Er sagte "ja", dann'),
    ('Er sagte ja," dann', "de", 'Er sagte ja", dann'),
    ('Sie schrieb "Ende"... und', "de", 'Sie schrieb "Ende"... und'),
    ('Sie schrieb Ende..." und', "de", 'Sie schrieb Ende"... und'),
    ("Ende.\"", "fr", 'Ende."'),  # a sentence's final period stays inside
    (f"1{NBSP}000 euros", "fr", "1,000 euros"),
    (f"1{NBSP}000 euros", "cs", "1,000 euros"),
    (f"1{NBSP}000 dollars", "en", "1.000 dollars"),
    (f"1{NBSP}000 dollars", None, "1.000 dollars"),
    ("3,5 % and 12 %", "en", "3,5% and 12%"),
    (f"12{NBSP}%", "fr", "12%"),
    (f"«{NBSP}Salut{NBSP}»", "fr", '"Salut"'),
    ("« Salut »", "fr", '" Salut "'),
    ("a—b – c…", "en", "a - b - c..."),
    ("don´t it’s ‘x’", "en", "don't it's 'x'"),
    ("``x''", "en", '" x "'),
    ("( a ) , b : c ; d", "en", "(a), b: c; d"),
    ("tabs\tstay  spaces go\r\n", "en", "tabs\tstay spaces go"),
    ("你好，世界。", "en", "你好，世界。"),  # CJK punctuation: not a default rule
    ("", "en", ""),
])
def test_rules(text: str, lang: str | None, expected: str) -> None:
    assert normalize_punctuation(text, lang) == expected


@pytest.mark.parametrize("lang", [*LANGS, "cz", "it", "mul", None])
def test_matches_sacremoses(lang: str | None) -> None:
    sacremoses = pytest.importorskip("sacremoses")
    reference = sacremoses.MosesPunctNormalizer(lang)
    for text in TEXTS:
        assert normalize_punctuation(text, lang) == reference.normalize(text), text
