"""Cutting texts at glossary terms and putting the target terms back."""

from __future__ import annotations

import pytest

from service.glossary import MAX_TERM_CHARS, Glossary, GlossaryError

TERMS = {"file manager": "Dateimanager", "file": "Datei", "Save": "Speichern"}


def test_terms_match_whole_words_case_insensitively_longest_first() -> None:
    pieces = Glossary(TERMS).apply(["Open the File Manager and click save.", "profile files"])
    assert pieces.texts == ["Open the", "and click", "profile files"]
    assert pieces.owner == [0, 0, 1]
    assert pieces.join(["<1>", "<2>", "<3>"]) == ["<1> Dateimanager <2> Speichern.", "<3>"]


def test_texts_without_terms_and_pieces_without_words() -> None:
    pieces = Glossary(TERMS).apply(["  no terms here  ", "file", "file, file!", "!!"])
    # A text without a term goes to the model exactly as given (even "!!").
    assert pieces.texts == ["  no terms here  ", "!!"]
    assert pieces.join(["X", "Y"]) == ["X", "Datei", "Datei, Datei!", "Y"]


@pytest.mark.parametrize(("terms", "words"), [
    ({" ": "x"}, "not blank"),
    ({"a" * (MAX_TERM_CHARS + 1): "x"}, "1 to 200"),
    ({"a": "x" * (MAX_TERM_CHARS + 1)}, "exceeds"),
    ({f"t{i}": "x" for i in range(257)}, "limit is 256"),
])
def test_bad_glossaries_are_refused(terms: dict[str, str], words: str) -> None:
    with pytest.raises(GlossaryError, match=words):
        Glossary(terms)
