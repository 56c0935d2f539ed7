"""`format: html`: split a document into its translatable text nodes and the markup
between them, so the text is translated (all nodes of a request in one batch) and the
markup comes back byte for byte.

The stdlib `html.parser` reports where every event starts; a text node's raw bytes are
the span up to the next event, so tags, attributes, comments, doctypes and the
contents of `<script>`, `<style>`, `<code>`, `<pre>`, `<kbd>`, `<samp>`, `<textarea>`
and any element marked `translate="no"` are copied from the input, never re-serialized.
Malformed input (stray end tags, unclosed elements, `<` in text) parses as browsers
read it: an unmatched end tag closes nothing, an unclosed element runs to the end.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser

# Pieces (text nodes, text between glossary terms) one request may send to the engine,
# each an input of the batch.
MAX_TEXT_NODES = 256
UNTRANSLATED = frozenset({"script", "style", "code", "pre", "kbd", "samp", "textarea"})
VOID = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
    "source", "track", "wbr",
})


@dataclass(frozen=True)
class Segment:
    """A piece of the document: markup kept as is, or text to translate (`text` is
    its unescaped content without surrounding whitespace, kept in `lead`/`trail`)."""

    raw: str
    text: str | None = None
    lead: str = ""
    trail: str = ""


class _Splitter(HTMLParser):
    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.source = source
        self.line_starts = [0] + [i + 1 for i, c in enumerate(source) if c == "\n"]
        self.events: list[tuple[int, bool]] = []  # (start offset, unshielded text?)
        self.open: list[tuple[str, bool]] = []  # (tag, shields its content?)
        self.shielded = 0

    def _at(self, translatable: bool = False) -> None:
        line, col = self.getpos()
        self.events.append((self.line_starts[line - 1] + col, translatable))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._at()
        if tag in VOID:
            return
        shield = tag in UNTRANSLATED or any(
            k == "translate" and (v or "").lower() == "no" for k, v in attrs
        )
        self.open.append((tag, shield))
        self.shielded += shield

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._at()

    def handle_endtag(self, tag: str) -> None:
        self._at()
        names = [t for t, _ in self.open]
        if tag not in names:
            return  # a stray end tag closes nothing
        while self.open:
            name, shield = self.open.pop()
            self.shielded -= shield
            if name == tag:
                break

    def handle_data(self, data: str) -> None:
        self._at(translatable=self.shielded == 0)

    def handle_comment(self, data: str) -> None:
        self._at()

    def handle_decl(self, decl: str) -> None:
        self._at()

    def handle_pi(self, data: str) -> None:
        self._at()

    def unknown_decl(self, data: str) -> None:
        self._at()


def split(document: str) -> list[Segment]:
    """The document as segments whose `raw` parts concatenate back to it exactly."""
    parser = _Splitter(document)
    parser.feed(document)
    parser.close()
    # Adjacent text events are one node ("a < b" arrives as three).
    events = [e for i, e in enumerate(parser.events)
              if not (e[1] and i and parser.events[i - 1][1])]
    bounds = [start for start, _ in events] + [len(document)]
    segments: list[Segment] = []
    if bounds[0] > 0:
        segments.append(Segment(document[: bounds[0]]))
    for (start, translatable), end in zip(events, bounds[1:], strict=True):
        raw = document[start:end]
        if not raw:
            continue
        if not translatable or not raw.strip():
            segments.append(Segment(raw))
            continue
        text = html.unescape(raw)
        core = text.strip()
        lead = raw[: len(raw) - len(raw.lstrip())]
        trail = raw[len(raw.rstrip()):]
        segments.append(Segment(raw, core, lead, trail))
    return segments


def texts(segments: list[Segment]) -> list[str]:
    """The text to translate, in document order."""
    return [s.text for s in segments if s.text is not None]


def join(segments: list[Segment], translations: list[str]) -> str:
    """The document with each text node replaced by its translation (escaped)."""
    out: list[str] = []
    it = iter(translations)
    for s in segments:
        if s.text is None:
            out.append(s.raw)
        else:
            out.append(s.lead + html.escape(next(it), quote=False) + s.trail)
    return "".join(out)


class Documents:
    """Several documents as one flat list of text nodes (`texts`, translated in one
    batch; `owner[i]` is the document of text i), and back with `join`."""

    def __init__(self, documents: Sequence[str]) -> None:
        self.segments = [split(d) for d in documents]
        per_doc = [texts(s) for s in self.segments]
        self.texts = [t for doc in per_doc for t in doc]
        self.owner = [i for i, doc in enumerate(per_doc) for _ in doc]

    def plain(self) -> list[str]:
        """Each document's text without markup (what language detection reads)."""
        out: list[list[str]] = [[] for _ in self.segments]
        for text, i in zip(self.texts, self.owner, strict=True):
            out[i].append(text)
        return ["\n".join(parts) for parts in out]

    def join(self, translations: Sequence[str]) -> list[str]:
        """Each document with its text nodes replaced by `translations`, in order."""
        it = iter(translations)
        return [
            join(segs, [next(it) for s in segs if s.text is not None]) for segs in self.segments
        ]
