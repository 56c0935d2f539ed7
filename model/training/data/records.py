"""Training records (one dataclass per task) and their JSONL reading and writing.

Every data source (the Debian builder, user files) ends up as these records, so the
training code reads one format whatever the data came from.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

log = logging.getLogger(__name__)

TASKS = ("translate", "summarize", "answer")
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class TranslateRecord:
    """A sentence or synopsis in ``src_lang`` and its translation in ``tgt_lang``."""

    source: str
    target: str
    src_lang: str
    tgt_lang: str
    package: str = ""
    task: ClassVar[str] = "translate"

    def key(self) -> tuple[str, ...]:
        """Identity used for de-duplication."""
        return (self.task, self.src_lang, self.tgt_lang, self.source, self.target)

    @property
    def input_text(self) -> str:
        """The text the model reads; held-out inputs must not appear in training."""
        return self.source


@dataclass(frozen=True)
class SummarizeRecord:
    """A long text and its short summary."""

    source: str
    target: str
    package: str = ""
    task: ClassVar[str] = "summarize"

    def key(self) -> tuple[str, ...]:
        return (self.task, self.source, self.target)

    @property
    def input_text(self) -> str:
        return self.source


@dataclass(frozen=True)
class AnswerRecord:
    """Extractive reading comprehension: the answer is a span of the context."""

    question: str
    context: str
    answer: str
    template: str = ""
    package: str = ""
    task: ClassVar[str] = "answer"

    def key(self) -> tuple[str, ...]:
        return (self.task, self.question, self.context, self.answer)

    @property
    def input_text(self) -> str:
        return self.question + "\n" + self.context


Record = TranslateRecord | SummarizeRecord | AnswerRecord
RECORD_TYPES: dict[str, type[Record]] = {
    "translate": TranslateRecord,
    "summarize": SummarizeRecord,
    "answer": AnswerRecord,
}


def to_dict(record: Record) -> dict[str, Any]:
    """The JSON object for a record, with ``task`` first."""
    # Not dataclasses.asdict: it deep-copies, and this runs once per written record.
    return {"task": record.task, **{f.name: getattr(record, f.name) for f in fields(record)}}


def from_dict(data: dict[str, Any], where: str = "<record>") -> Record:
    """Build a record from a JSON object that carries a ``task`` field.

    Raises ValueError naming ``where`` (e.g. "file.jsonl:3") and the missing field.
    """
    task = data.get("task")
    if task not in RECORD_TYPES:
        raise ValueError(f"{where}: field 'task' must be one of {TASKS}, got {task!r}")
    cls = RECORD_TYPES[task]
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name in data:
            value = data[f.name]
            if not isinstance(value, str):
                raise ValueError(f"{where}: field {f.name!r} must be a string")
            kwargs[f.name] = value
        elif f.default is MISSING:
            raise ValueError(f"{where}: missing field {f.name!r}")
    return cls(**kwargs)


def write_jsonl(path: Path, records: Iterable[Record]) -> int:
    """Write records one JSON object per line (UTF-8, not ASCII-escaped); returns the count."""
    count = 0
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(to_dict(record), ensure_ascii=False) + "\n")
            count += 1
    log.debug("wrote %d records to %s", count, path)
    return count


def json_objects(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, object) for each non-blank line of a JSONL file; `where` is "file:line",
    and malformed lines raise ValueError naming it."""
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: invalid JSON ({exc.msg})") from exc
            if not isinstance(data, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
            yield where, data


def read_jsonl(path: Path) -> Iterator[Record]:
    """Read records written by :func:`write_jsonl`; errors name the file and line."""
    for where, data in json_objects(path):
        yield from_dict(data, where)
