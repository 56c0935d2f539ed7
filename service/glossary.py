"""`glossary` ({source term: target term}) on /v1/translate and gRPC Translate.

Placeholder substitution where the placeholder is a segment boundary: each text is
cut at its glossary terms, the pieces between them are translated (all pieces of a
request in one batch) and the target terms are put back between their translations.
Sora's models do not reliably copy an opaque placeholder token through a translation
(the 7.6M-parameter default drops or mangles `XQZ7`, `{0}`, `__0__`, `$1`), so the term
is never shown to the model: it cannot be translated, dropped or misspelt. The cost is
context across the cut, which may leave word order or agreement around the term off.

Terms match whole words, case-insensitively, longest first. A text without a term is
translated as it stands; a piece with no letters or digits (punctuation, spaces) is
kept as is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MAX_TERMS = 256
MAX_TERM_CHARS = 200
_WORD = re.compile(r"\w")


class GlossaryError(ValueError):
    """A glossary that cannot be applied (names the offending term)."""


@dataclass(frozen=True)
class _Part:
    raw: str  # the source text of this part
    term: str | None = None  # the target term replacing it, for a matched term
    translate: bool = False  # a piece the model translates (its core, stripped)


class Glossary:
    def __init__(self, terms: Mapping[str, str]) -> None:
        if len(terms) > MAX_TERMS:
            raise GlossaryError(f"{len(terms)} terms; the limit is {MAX_TERMS}")
        for source, target in terms.items():
            if not source.strip() or len(source) > MAX_TERM_CHARS:
                raise GlossaryError(
                    f"term {source[:40]!r} must be 1 to {MAX_TERM_CHARS} characters, not blank"
                )
            if len(target) > MAX_TERM_CHARS:
                raise GlossaryError(f"the target of {source!r} exceeds {MAX_TERM_CHARS} characters")
        self.targets = {s.casefold(): t for s, t in terms.items()}
        alternatives = "|".join(re.escape(s) for s in sorted(terms, key=len, reverse=True))
        self.pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)

    def apply(self, texts: Sequence[str]) -> Pieces:
        return Pieces(self, texts)


class Pieces:
    """`texts` cut at their glossary terms: the flat list of pieces to translate
    (`texts`, `owner[i]` the input of piece i), and back with `join`."""

    def __init__(self, glossary: Glossary, texts: Sequence[str]) -> None:
        self.parts: list[list[_Part]] = []
        self.texts: list[str] = []
        self.owner: list[int] = []
        for i, text in enumerate(texts):
            parts = self._split(glossary, text)
            self.parts.append(parts)
            for part in parts:
                if part.translate:
                    self.texts.append(part.raw.strip() if len(parts) > 1 else part.raw)
                    self.owner.append(i)

    @staticmethod
    def _split(glossary: Glossary, text: str) -> list[_Part]:
        parts: list[_Part] = []
        at = 0
        for m in glossary.pattern.finditer(text):
            if m.start() > at:
                parts.append(_piece(text[at : m.start()]))
            parts.append(_Part(m.group(), term=glossary.targets[m.group().casefold()]))
            at = m.end()
        if not parts:
            return [_Part(text, translate=True)]  # no term: translated as it stands
        if at < len(text):
            parts.append(_piece(text[at:]))
        return parts

    def join(self, translations: Sequence[str]) -> list[str]:
        """Each input with its pieces replaced by `translations` (in order) and its
        terms by their targets."""
        it = iter(translations)
        out = []
        for parts in self.parts:
            pieces = []
            for part in parts:
                if part.term is not None:
                    pieces.append(part.term)
                elif not part.translate:
                    pieces.append(part.raw)
                elif len(parts) == 1:
                    pieces.append(next(it))
                else:
                    core = part.raw.strip()
                    lead = part.raw[: part.raw.index(core)]
                    pieces.append(lead + next(it) + part.raw[len(lead) + len(core):])
            out.append("".join(pieces))
        return out


def _piece(raw: str) -> _Part:
    return _Part(raw, translate=bool(_WORD.search(raw)))
