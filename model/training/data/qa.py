"""Templated reading-comprehension examples over package control fields and descriptions.

Every answer is copied from the context, so an extractive model can learn to find it;
the builder checks that before keeping an example. Questions are phrased from a few
templates, and each example records which one (``template``) so evaluation can report
accuracy per question type.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .debian import Lists, dependency_names
from .examples import long_text
from .records import AnswerRecord
from .text import normalize

log = logging.getLogger(__name__)

TEMPLATES = (
    "what_is",
    "homepage",
    "section",
    "depends",
    "version",
    "maintainer",
    "which_provides",
)
_EMAIL = re.compile(r"\s*<[^>]*>\s*")


@dataclass(frozen=True)
class PackageInfo:
    """What the templates know about one binary package."""

    name: str
    synopsis: str
    fields: dict[str, str]  # control fields shown in the context, in display order
    description: str  # long description, one line per paragraph, possibly truncated


def package_info(lists: Lists, name: str, max_words: int, max_depends: int) -> PackageInfo:
    """Collect the shown fields of one package from its control stanza and description."""
    control = lists.control[name]
    description = lists.descriptions.get("en", {}).get(control.get("Description-md5", ""))
    synopsis = normalize(description.synopsis if description else control.get("Description", ""))
    fields: dict[str, str] = {}
    for field in ("Version", "Section", "Homepage", "Maintainer"):
        if control.get(field):
            fields[field] = normalize(control[field])
    depends = dependency_names(control.get("Depends", ""))[:max_depends]
    if depends:
        fields["Depends"] = ", ".join(depends)
    text = _truncate(long_text(description), max_words) if description else ""
    return PackageInfo(name, synopsis, fields, text)


def _truncate(text: str, max_words: int) -> str:
    """Keep at most ``max_words`` words, cutting whole paragraphs where possible."""
    kept: list[str] = []
    used = 0
    for paragraph in text.split("\n"):
        words = paragraph.split()
        if used + len(words) > max_words:
            if not kept:  # the first paragraph alone is too long: cut it
                kept.append(" ".join(words[:max_words]))
            break
        kept.append(paragraph)
        used += len(words)
    return "\n".join(kept)


def context_of(info: PackageInfo, rng: random.Random) -> str:
    """Package name first, the other fields in a per-package shuffled order, then text.

    Shuffling stops a model from answering by position ("the third line").
    """
    items = list(info.fields.items())
    rng.shuffle(items)
    lines = [f"Package: {info.name}"] + [f"{k}: {v}" for k, v in items]
    lines.append(f"Description: {info.synopsis}")
    if info.description:
        lines.append(info.description)
    return "\n".join(lines)


def _phrase(synopsis: str) -> str:
    """Synopsis as a phrase inside a question: lower-case a capitalised first word."""
    if len(synopsis) > 1 and synopsis[0].isupper() and synopsis[1].islower():
        return synopsis[0].lower() + synopsis[1:]
    return synopsis


def _single(info: PackageInfo, template: str) -> tuple[str, str] | None:
    """(question, answer) for a single-package template, or None when the field is absent."""
    name, fields = info.name, info.fields
    if template == "what_is":
        return (f"What is {name}?", info.synopsis) if info.synopsis else None
    if template == "homepage" and "Homepage" in fields:
        return f"What is the homepage of {name}?", fields["Homepage"]
    if template == "section" and "Section" in fields:
        return f"Which section is {name} in?", fields["Section"]
    if template == "depends" and "Depends" in fields:
        return f"What does {name} depend on?", fields["Depends"].split(", ")[0]
    if template == "version" and "Version" in fields:
        return f"What version of {name} is this?", fields["Version"]
    if template == "maintainer" and "Maintainer" in fields:
        maintainer = _EMAIL.sub(" ", fields["Maintainer"]).strip()
        return (f"Who maintains {name}?", maintainer) if maintainer else None
    return None


def _which_provides(
    info: PackageInfo, pool: list[PackageInfo], choices: int, rng: random.Random
) -> AnswerRecord | None:
    """Pick the package with a given synopsis out of ``choices`` listed packages."""
    others: dict[str, PackageInfo] = {}
    for _ in range(choices * 10):
        if len(others) == choices - 1 or len(pool) < choices:
            break
        other = pool[rng.randrange(len(pool))]
        if other.name != info.name and other.synopsis and other.synopsis != info.synopsis:
            others[other.name] = other
    if len(others) < choices - 1 or not info.synopsis:
        return None
    listed = [info, *others.values()]
    rng.shuffle(listed)
    context = "\n\n".join(f"Package: {p.name}\nDescription: {p.synopsis}" for p in listed)
    names = ", ".join(p.name for p in listed)
    question = f"Which of these packages provides {_phrase(info.synopsis)}: {names}?"
    return AnswerRecord(question, context, info.name, "which_provides", info.name)


def answer_examples(
    lists: Lists,
    split_for: Callable[[str], str],
    seed: int,
    per_package: int,
    choices: int = 3,
    max_words: int = 200,
    max_depends: int = 5,
) -> Iterator[AnswerRecord]:
    """Up to ``per_package`` questions for each package with an English synopsis.

    Templates are drawn per package from a generator seeded by (seed, package), so the
    output does not depend on iteration order. Distractors for ``which_provides`` come
    from the same split, so held-out packages never appear in training contexts.
    """
    infos = [package_info(lists, name, max_words, max_depends) for name in sorted(lists.control)]
    infos = [info for info in infos if info.synopsis]
    pools: dict[str, list[PackageInfo]] = {}
    for info in infos:
        pools.setdefault(split_for(info.name), []).append(info)
    for info in infos:
        rng = random.Random(f"{seed}:qa:{info.name}")
        templates = list(TEMPLATES)
        rng.shuffle(templates)
        made = 0
        for template in templates:
            if made == per_package:
                break
            record: AnswerRecord | None
            if template == "which_provides":
                record = _which_provides(info, pools[split_for(info.name)], choices, rng)
            else:
                qa = _single(info, template)
                record = None
                if qa is not None:
                    record = AnswerRecord(qa[0], context_of(info, rng), qa[1], template, info.name)
            if record is not None and record.answer and record.answer in record.context:
                made += 1
                yield record
