"""Moses' punctuation normalization (normalize-punctuation.perl), with the rules and
defaults that sacremoses' `MosesPunctNormalizer(lang)` applies.

OPUS-MT (Marian) models were trained on source text normalized this way, so an
imported Marian model's sources go through it before SentencePiece
(`Prompting.moses_lang`). Pure Python, so serving needs no sacremoses.
"""

from __future__ import annotations

import re
from functools import lru_cache

Rule = tuple[re.Pattern[str], str]

NBSP = "\u00a0"
# Languages that keep punctuation after a closing quote ("word",) and write a decimal
# comma; any other code (None, "mul", "eng") gets the language-neutral rules.
QUOTE_COMMA_LANGS = ("de", "es", "fr")
DECIMAL_COMMA_LANGS = ("de", "es", "cz", "cs", "fr")


def _compile(rules: list[tuple[str, str]]) -> tuple[Rule, ...]:
    return tuple((re.compile(pattern), repl) for pattern, repl in rules)


# Carriage returns, spaces around brackets and before : ; and a number's %.
SPACING = _compile([
    (r"\r", ""), (r"\(", " ("), (r"\)", ") "), (r" +", " "), (r"\) ([.!:?;,])", r")\1"),
    (r"\( ", "("), (r" \)", ")"), (r"(\d) %", r"\1%"), (r" :", ":"), (r" ;", ";"),
])
# Penn Treebank quotes: ` as ', '' as a spaced ".
PENN_QUOTES = _compile([(r"`", "'"), (r"''", ' " ')])
# Typographic quotes, dashes, apostrophes and the ellipsis as ASCII.
TYPOGRAPHY = _compile([
    ("„", '"'), ("“", '"'), ("”", '"'), ("–", "-"), ("—", " - "), (r" +", " "), ("´", "'"),
    ("([a-zA-Z])‘([a-zA-Z])", r"\1'\2"), ("([a-zA-Z])’([a-zA-Z])", r"\1'\2"),
    ("‘", "'"), ("‚", "'"), ("’", "'"), (r"''", '"'), ("´´", '"'), ("…", "..."),
])
# French guillemets, with the non-breaking spaces inside them, as plain quotes.
GUILLEMETS = _compile([
    (f"{NBSP}«{NBSP}", '"'), (f"«{NBSP}", '"'), ("«", '"'),
    (f"{NBSP}»{NBSP}", '"'), (f"{NBSP}»", '"'), ("»", '"'),
])
# Non-breaking spaces before punctuation and units, after commas.
PSEUDO_SPACES = _compile([
    (f"{NBSP}%", "%"), (f"nº{NBSP}", "nº "), (f"{NBSP}:", ":"), (f"{NBSP}ºC", " ºC"),
    (f"{NBSP}cm", " cm"), (f"{NBSP}\\?", "?"), (f"{NBSP}!", "!"), (f"{NBSP};", ";"),
    (f",{NBSP}", ", "), (r" +", " "),
])
# English puts a comma or period inside the closing quote.
EN_QUOTE_COMMA = _compile([(r'"([,.]+)', r'\1"')])
# German, Spanish, French put them after it (but a sentence's final period stays).
QUOTE_COMMA = _compile([(r',"', '",'), (r'(\.+)"(\s*[^<])', r'"\1\2')])
# A non-breaking space between digits (a thousands separator) as the decimal mark.
DECIMAL_COMMA = _compile([(f"(\\d){NBSP}(\\d)", r"\1,\2")])
DECIMAL_POINT = _compile([(f"(\\d){NBSP}(\\d)", r"\1.\2")])


@lru_cache
def rules(lang: str | None) -> tuple[Rule, ...]:
    """The substitutions for `lang`, in the order Moses applies them."""
    quotes: tuple[Rule, ...] = ()
    if lang == "en":
        quotes = EN_QUOTE_COMMA
    elif lang in QUOTE_COMMA_LANGS:
        quotes = QUOTE_COMMA
    numbers = DECIMAL_COMMA if lang in DECIMAL_COMMA_LANGS else DECIMAL_POINT
    return SPACING + PENN_QUOTES + TYPOGRAPHY + GUILLEMETS + PSEUDO_SPACES + quotes + numbers


def normalize_punctuation(text: str, lang: str | None) -> str:
    """`text` as `MosesPunctNormalizer(lang).normalize(text)` returns it."""
    for pattern, repl in rules(lang):
        text = pattern.sub(repl, text)
    return text.strip()
