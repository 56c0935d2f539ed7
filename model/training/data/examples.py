"""Translation, summarization and monolingual examples from parsed Debian descriptions.

Alignment is conservative: sentences are paired only inside paragraphs at the same
position, and only when both sides split into the same number of sentences. Anything
ambiguous is dropped; DDTP has enough text that precision matters more than recall.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from .debian import Description, Lists
from .records import SummarizeRecord, TranslateRecord
from .text import has_letters, join_lines, length_units, normalize, segments

log = logging.getLogger(__name__)

# DDTP language names -> the short codes used in records and task tokens.
LANG_CODES = {"zh_CN": "zh", "zh_TW": "zh_TW", "pt_BR": "pt_BR"}


def lang_code(ddtp_lang: str) -> str:
    """Record language code for a DDTP language ("zh_CN" -> "zh", "de" -> "de")."""
    return LANG_CODES.get(ddtp_lang, ddtp_lang)


def keep_pair(source: str, target: str, src_lang: str, tgt_lang: str, max_ratio: float) -> bool:
    """Reject empty, untranslated (identical) and wildly mismatched pairs."""
    if not source or not target or source == target:
        return False
    if not (has_letters(source) and has_letters(target)):
        return False
    a, b = length_units(source, src_lang), length_units(target, tgt_lang)
    return max(a, b) <= max_ratio * max(min(a, b), 1.0)


def aligned_sentences(
    english: Description, other: Description, lang: str
) -> Iterator[tuple[str, str]]:
    """(English, translated) synopsis and sentence pairs of one description."""
    yield normalize(english.synopsis), normalize(other.synopsis)
    if len(english.paragraphs) != len(other.paragraphs):
        return
    for en_par, tr_par in zip(english.paragraphs, other.paragraphs, strict=True):
        en_sents, tr_sents = segments(en_par, "en"), segments(tr_par, lang)
        if len(en_sents) == len(tr_sents):
            yield from zip(en_sents, tr_sents, strict=True)


def translation_examples(
    lists: Lists, languages: tuple[str, ...], max_ratio: float
) -> Iterator[TranslateRecord]:
    """Both directions of every English <-> ``languages`` pair that passes the filters."""
    english = lists.descriptions.get("en", {})
    for lang in languages:
        translated = lists.descriptions.get(lang, {})
        code = lang_code(lang)
        kept = dropped = 0
        for md5 in sorted(translated.keys() & english.keys()):
            package = lists.owner(md5)
            for en, tr in aligned_sentences(english[md5], translated[md5], lang):
                if not keep_pair(en, tr, "en", lang, max_ratio):
                    dropped += 1
                    continue
                kept += 1
                yield TranslateRecord(en, tr, "en", code, package)
                yield TranslateRecord(tr, en, code, "en", package)
        log.info("en-%s: %d aligned pairs kept, %d dropped by filters", code, kept, dropped)


def long_text(description: Description) -> str:
    """The long description as text: one line per paragraph."""
    return "\n".join(p for p in (join_lines(par) for par in description.paragraphs) if p)


def summarization_examples(lists: Lists, min_words: int) -> Iterator[SummarizeRecord]:
    """English long description (at least ``min_words`` words) -> its synopsis."""
    for md5, description in sorted(lists.descriptions.get("en", {}).items()):
        text = long_text(description)
        synopsis = normalize(description.synopsis)
        if synopsis and len(text.split()) >= min_words:
            yield SummarizeRecord(text, synopsis, lists.owner(md5))


def monolingual_lines(lists: Lists) -> Iterator[tuple[str, str, str]]:
    """(lang, package, line) for every synopsis and paragraph, for denoising pre-training."""
    for lang, by_md5 in sorted(lists.descriptions.items()):
        code = lang_code(lang)
        for md5, description in sorted(by_md5.items()):
            package = lists.owner(md5)
            synopsis = normalize(description.synopsis)
            if has_letters(synopsis):
                yield code, package, synopsis
            for paragraph in description.paragraphs:
                line = join_lines(paragraph)
                if has_letters(line):
                    yield code, package, line
