"""Readers that turn user data in common shapes into Sora's JSONL records.

Supported shapes (``load_examples`` detects which one a file is):

- SQuAD v1.1 / v2.0 JSON (``{"data": [{"paragraphs": [{"context", "qas"}]}]}``): one
  answer record per question, answered with its first gold answer. SQuAD v2
  unanswerable questions (``is_impossible``) are skipped by default, because Sora's
  answer task is extractive and has no "no answer" output; pass
  ``unanswerable="empty"`` to keep them with an empty answer instead.
- QA JSONL: ``{"question", "context", "answer"}`` per line.
- Parallel text: TSV ``source<TAB>target`` or JSONL ``{"source", "target"}``; the
  languages come from ``src_lang``/``tgt_lang`` (or per-line fields of those names).
- Summarization JSONL: ``{"text"|"source"|"document", "summary"|"target"}``.
- Sora's own JSONL (lines carrying ``"task"``), as written by the Debian builder.

A ``{"source", "target"}`` JSONL file is either parallel text or summarization: it is
read as translation when languages are given, else ``task`` must say which. Malformed
input raises ValueError naming the file, the line (or SQuAD item) and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from .records import (
    TASKS,
    AnswerRecord,
    Record,
    SummarizeRecord,
    TranslateRecord,
    from_dict,
    json_objects,
)

_SUMMARY_SOURCES = ("text", "source", "document")
_SUMMARY_TARGETS = ("summary", "target")


def load_examples(
    path: Path | str,
    task: str | None = None,
    src_lang: str | None = None,
    tgt_lang: str | None = None,
    unanswerable: Literal["skip", "empty"] = "skip",
) -> list[Record]:
    """Read a user data file as records, detecting its shape from suffix and fields."""
    path = Path(path)
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return read_squad(path, unanswerable)
    if suffix in (".tsv", ".txt"):
        return read_parallel_tsv(path, _require_langs(path, src_lang, tgt_lang))
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path, task, src_lang, tgt_lang)
    raise ValueError(f"{path}: unsupported file type {suffix!r} (use .json, .jsonl or .tsv)")


def _require_langs(path: Path, src: str | None, tgt: str | None) -> tuple[str, str]:
    if not src or not tgt:
        raise ValueError(f"{path}: parallel text needs --src-lang and --tgt-lang")
    return src, tgt


def read_squad(path: Path, unanswerable: Literal["skip", "empty"] = "skip") -> list[Record]:
    """SQuAD v1/v2 JSON -> answer records (see the module docstring for v2 handling)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f"{path}: not SQuAD JSON: missing top-level field 'data' (a list)")
    records: list[Record] = []
    for a, article in enumerate(data["data"]):
        title = article.get("title", "") if isinstance(article, dict) else ""
        for p, paragraph in enumerate(_field(article, "paragraphs", f"{path}: data[{a}]")):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", where)
            for q, qa in enumerate(_field(paragraph, "qas", where)):
                qwhere = f"{where}.qas[{q}]"
                question = _field(qa, "question", qwhere)
                if qa.get("is_impossible"):
                    if unanswerable == "empty":
                        records.append(AnswerRecord(question, context, "", "squad", title))
                    continue
                answers = _field(qa, "answers", qwhere)
                if not answers:
                    raise ValueError(f"{qwhere}: field 'answers' is empty")
                answer = _field(answers[0], "text", f"{qwhere}.answers[0]")
                records.append(AnswerRecord(question, context, answer, "squad", title))
    return records


def _field(obj: Any, name: str, where: str) -> Any:
    """``obj[name]`` or a ValueError saying where it is missing."""
    if not isinstance(obj, dict) or name not in obj:
        raise ValueError(f"{where}: missing field {name!r}")
    return obj[name]


def read_parallel_tsv(path: Path, langs: tuple[str, str]) -> list[Record]:
    """``source<TAB>target`` lines -> translate records; blank lines are skipped."""
    records: list[Record] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise ValueError(
                    f"{path}:{lineno}: expected 'source<TAB>target', got {len(parts)} column(s)"
                )
            source, target = (s.strip() for s in parts)
            if not source or not target:
                field = "source" if not source else "target"
                raise ValueError(f"{path}:{lineno}: empty field {field!r}")
            records.append(TranslateRecord(source, target, langs[0], langs[1]))
    return records


def _read_jsonl(
    path: Path, task: str | None, src_lang: str | None, tgt_lang: str | None
) -> list[Record]:
    """JSONL in any supported shape; the shape is decided per line from its fields."""
    records: list[Record] = [
        _from_object(obj, where, task, src_lang, tgt_lang) for where, obj in json_objects(path)
    ]
    return records


def _line_task(obj: dict[str, Any], where: str, task: str | None, langs: bool) -> str:
    """Which task a JSON object belongs to: given, stated in the line, or by its fields."""
    if task is not None:
        return task
    if isinstance(obj.get("task"), str):
        return str(obj["task"])
    if "question" in obj:
        return "answer"
    if "summary" in obj or "text" in obj or "document" in obj:
        return "summarize"
    if "source" in obj or "target" in obj:
        if langs or "src_lang" in obj:
            return "translate"
        raise ValueError(
            f"{where}: a {{source, target}} line is translation or summarization: "
            "pass --task, or --src-lang/--tgt-lang for parallel text"
        )
    raise ValueError(f"{where}: cannot tell the task from fields {sorted(obj)}; pass --task")


def _from_object(
    obj: dict[str, Any], where: str, task: str | None, src_lang: str | None, tgt_lang: str | None
) -> Record:
    """One JSON object -> one record of the detected (or given) task."""
    task = _line_task(obj, where, task, bool(src_lang and tgt_lang))
    if task == "answer":
        return AnswerRecord(
            _text(obj, ("question",), where),
            _text(obj, ("context",), where),
            _text(obj, ("answer",), where, allow_empty=True),
            str(obj.get("template", "")),
            str(obj.get("package", "")),
        )
    if task == "summarize":
        return SummarizeRecord(
            _text(obj, _SUMMARY_SOURCES, where),
            _text(obj, _SUMMARY_TARGETS, where),
            str(obj.get("package", "")),
        )
    src = obj.get("src_lang") or src_lang
    tgt = obj.get("tgt_lang") or tgt_lang
    if not src or not tgt:
        missing = "src_lang" if not src else "tgt_lang"
        raise ValueError(f"{where}: missing field {missing!r} (or pass --src-lang/--tgt-lang)")
    data = {**obj, "task": "translate", "src_lang": src, "tgt_lang": tgt}
    data["source"] = _text(obj, ("source",), where)
    data["target"] = _text(obj, ("target",), where)
    return from_dict(data, where)


def _text(
    obj: dict[str, Any], names: tuple[str, ...], where: str, allow_empty: bool = False
) -> str:
    """The first present field of ``names`` as a string; errors name what is missing."""
    for name in names:
        if name in obj:
            value = obj[name]
            if not isinstance(value, str):
                raise ValueError(f"{where}: field {name!r} must be a string")
            if not value.strip() and not allow_empty:
                raise ValueError(f"{where}: field {name!r} is empty")
            return value
    label = " or ".join(repr(n) for n in names)
    raise ValueError(f"{where}: missing field {label}")
