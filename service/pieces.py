"""Translate inputs cut into pieces translated separately: html documents into their
text nodes (markup.Documents), then text at its glossary terms (glossary.Pieces). The
pieces of a request go to the engine together (one batch) and their completions are
joined back into one per input. Shared by /v1/translate and gRPC Translate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from service import markup
from service.engine.errors import InvalidRequest
from service.engine.request import Completion
from service.glossary import Glossary, GlossaryError


class Split(Protocol):
    """Inputs cut into pieces: `texts` the pieces, `owner[i]` the input of piece i."""

    texts: list[str]
    owner: list[int]

    def join(self, translations: Sequence[str]) -> list[str]: ...


@dataclass
class Plan:
    """How a request's texts are cut; no splits: each text is one piece."""

    texts: list[str]
    splits: list[Split] = field(default_factory=list)

    @property
    def pieces(self) -> list[str]:
        return self.splits[-1].texts if self.splits else self.texts

    @property
    def owner(self) -> list[int]:
        """The input text of each piece."""
        owner = list(range(len(self.texts)))
        for split in self.splits:
            owner = [owner[i] for i in split.owner]
        return owner

    def plain(self) -> list[str]:
        """Each input's text without markup: what language detection reads."""
        html = next((s for s in self.splits if isinstance(s, markup.Documents)), None)
        return html.plain() if html is not None else self.texts

    def join(self, completions: list[Completion]) -> list[Completion]:
        """One completion per input from those of its pieces: texts joined, token counts
        summed, `length` if any piece ran out."""
        for split in reversed(self.splits):
            completions = _joined(split, completions)
        return completions


def plan(
    texts: list[str],
    *,
    html: bool,
    glossary: Mapping[str, str] | None,
    stream: bool,
    text_field: str,
) -> Plan:
    """Cut `texts`: html into text nodes, then each at its glossary terms. Raises
    InvalidRequest naming the field (a bad glossary, too many pieces, a stream)."""
    result = Plan(texts)
    if html:
        result.splits.append(markup.Documents(texts))
    if glossary:
        try:
            result.splits.append(Glossary(glossary).apply(result.pieces))
        except GlossaryError as e:
            raise InvalidRequest(str(e), field="glossary") from None
    if not result.splits:
        return result
    if len(result.pieces) > markup.MAX_TEXT_NODES:
        raise InvalidRequest(
            f"{len(result.pieces)} pieces to translate (text nodes, text between glossary "
            f"terms); the limit is {markup.MAX_TEXT_NODES}", field=text_field,
        )
    if stream:
        what = " and ".join(w for w, on in (("format html", html), ("a glossary", glossary))
                            if on)
        raise InvalidRequest(f"{what} cannot be streamed", field="stream")
    return result


def _joined(split: Split, pieces: list[Completion]) -> list[Completion]:
    texts = split.join([c.text for c in pieces])
    groups: list[list[Completion]] = [[] for _ in texts]
    for c, i in zip(pieces, split.owner, strict=True):
        groups[i].append(c)
    return [
        Completion(
            text=text,
            finish_reason="length" if any(c.finish_reason == "length" for c in g) else "eos",
            prompt_tokens=sum(c.prompt_tokens for c in g),
            completion_tokens=sum(c.completion_tokens for c in g),
            logprob=None, model=pieces[0].model if pieces else "",
            version=pieces[0].version if pieces else "",
            segments=sum(c.segments for c in g),
        )
        for text, g in zip(texts, groups, strict=True)
    ]
