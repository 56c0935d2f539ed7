"""Stage 1: train the byte-level BPE tokenizer on the training text of every language.

The text is drawn round-robin from the monolingual file and every task's training
records (both sides of each translation, summaries and their sources, questions and
contexts), so every language and register gets merges, up to `max_chars` characters.
Output: OUT/tokenizer/{tokenizer.json, info.json}, written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model.tokenizer import SoraTokenizer
from model.training.data.records import AnswerRecord, SummarizeRecord, TranslateRecord, read_jsonl
from model.training.recipe import TASKS, Recipe

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"


def _monolingual(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield line.rstrip("\n")


def _task_texts(path: Path) -> Iterator[str]:
    for r in read_jsonl(path):
        if isinstance(r, TranslateRecord | SummarizeRecord):
            yield r.source
            yield r.target
        elif isinstance(r, AnswerRecord):
            yield r.question
            yield r.context


def training_texts(data_dir: Path, max_chars: int) -> Iterator[str]:
    """Round-robin over the text sources until `max_chars` characters."""
    sources: list[Iterator[str]] = []
    if (data_dir / "monolingual.train.txt").is_file():
        sources.append(_monolingual(data_dir / "monolingual.train.txt"))
    sources += [_task_texts(data_dir / f"{t}.train.jsonl") for t in TASKS
                if (data_dir / f"{t}.train.jsonl").is_file()]
    total = 0
    while sources and total < max_chars:
        for it in list(sources):
            text = next(it, None)
            if text is None:
                sources.remove(it)
                continue
            total += len(text)
            yield text


def train_tokenizer(recipe: Recipe, out: Path) -> dict[str, Any]:
    """Train and write OUT/tokenizer; returns its info (also in info.json)."""
    t = recipe.tokenizer
    started = time.monotonic()
    chars = 0

    def counted() -> Iterator[str]:
        nonlocal chars
        for text in training_texts(Path(recipe.data_dir), t.max_chars):
            chars += len(text)
            yield text

    tok = SoraTokenizer.train(counted(), t.vocab_size, t.min_frequency)
    info = {
        "vocab_size": tok.vocab_size,
        "requested_vocab_size": t.vocab_size,
        "training_chars": chars,
        "seconds": round(time.monotonic() - started, 1),
    }
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tok.save(tmp / TOKENIZER_FILE)
    (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    log.info("tokenizer: %d tokens from %d characters in %.0fs", tok.vocab_size, chars,
             info["seconds"])
    return info


def load_stage_tokenizer(out: Path) -> SoraTokenizer:
    return SoraTokenizer.from_file(out / TOKENIZER_FILE)


def tokenizer_done(out: Path) -> bool:
    return (out / TOKENIZER_FILE).is_file() and (out / "info.json").is_file()
