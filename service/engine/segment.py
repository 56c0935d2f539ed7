"""Splitting documents longer than one model context into segments, and back.

Paragraph breaks are kept (segments are joined with the break that followed them);
within a paragraph, whole sentences are packed greedily up to the token limit, so a
document is decoded as a batch of ordinary sequences and reassembled in order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

# A sentence ends at . ! ? (or CJK 。！？) followed by space/end; keeps the punctuation.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)|(?<=[。！？])")
_PARAGRAPH = re.compile(r"(\n\s*\n|\n)")


@dataclass(frozen=True)
class Segment:
    text: str
    joiner: str  # what separates this segment's output from the next one's


class SegmentTooLong(ValueError):
    def __init__(self, tokens: int, limit: int) -> None:
        super().__init__(
            f"a sentence has {tokens} tokens, more than the {limit}-token limit per sequence"
        )
        self.tokens = tokens
        self.limit = limit


def split_sentences(paragraph: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(paragraph) if s.strip()]


def split_document(text: str, count_tokens: Callable[[str], int], limit: int) -> list[Segment]:
    """Segments of `text` each within `limit` tokens (as counted by `count_tokens`)."""
    parts = _PARAGRAPH.split(text.strip())
    segments: list[Segment] = []
    for i in range(0, len(parts), 2):
        paragraph = parts[i].strip()
        brk = parts[i + 1] if i + 1 < len(parts) else ""
        brk = "\n\n" if brk.count("\n") > 1 else brk
        if not paragraph:
            continue
        current: list[str] = []
        used = 0
        for sentence in split_sentences(paragraph):
            n = count_tokens(sentence)
            if n > limit:
                raise SegmentTooLong(n, limit)
            # +1 per sentence: the joining space may become a token of its own.
            if current and used + n + 1 > limit:
                segments.append(Segment(" ".join(current), " "))
                current, used = [], 0
            current.append(sentence)
            used += n + 1
        if current:
            segments.append(Segment(" ".join(current), brk or " "))
    if segments:
        last = segments[-1]
        segments[-1] = Segment(last.text, "")
    return segments
