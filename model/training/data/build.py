"""Build the Debian training set: examples, splits by source package, files, manifest.

Splits are decided by hashing the *source* package name, so binary siblings built from
one source (``libfoo1``, ``libfoo-dev``, ``foo-doc``), whose descriptions share most of
their text, always land in the same split. What still leaks across sources (identical
boilerplate paragraphs) is removed: a training example whose input also appears as a
held-out input is dropped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from model.checkpoint import sha256_file

from .debian import Lists, load_lists
from .examples import lang_code, monolingual_lines, summarization_examples, translation_examples
from .qa import answer_examples
from .records import SPLITS, Record, TranslateRecord, write_jsonl

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


@dataclass(frozen=True)
class BuildConfig:
    """Parameters of one build; recorded in the manifest so a build can be repeated."""

    valid_frac: float = 0.02
    test_frac: float = 0.02
    seed: int = 0
    # DDTP languages paired with English, in both directions (es and zh_CN are small)
    pairs: tuple[str, ...] = ("de", "fr", "es", "zh_CN")
    # languages read at all (the others feed only the monolingual file)
    languages: tuple[str, ...] = ("en", "de", "fr", "es", "zh_CN", "it")
    max_length_ratio: float = 3.0  # longer side / shorter side, CJK characters count ~3
    min_summary_words: int = 40
    qa_per_package: int = 2
    qa_choices: int = 3  # packages listed in a "which_provides" question
    qa_max_context_words: int = 200
    qa_max_depends: int = 5

    def __post_init__(self) -> None:
        if not (
            self.valid_frac >= 0 and self.test_frac >= 0 and self.valid_frac + self.test_frac < 1
        ):
            raise ValueError("valid_frac and test_frac must be >= 0 and sum to less than 1")


def split_of(source_package: str, valid_frac: float, test_frac: float) -> str:
    """Stable split of a source package: a sha256 bucket, the same on every machine."""
    digest = hashlib.sha256(source_package.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    if bucket < valid_frac:
        return "valid"
    if bucket < valid_frac + test_frac:
        return "test"
    return "train"


def _order_key(seed: int, key: tuple[str, ...]) -> str:
    """A seeded pseudo-random but fully deterministic position for a record."""
    return hashlib.sha256(json.dumps([seed, *key], ensure_ascii=False).encode()).hexdigest()


def assign_splits(
    records: Iterable[Record], split_for: Callable[[str], str], seed: int
) -> dict[str, list[Record]]:
    """Dedupe, split by package, drop inputs leaking across splits, and order records.

    Held-out splits have priority: test keeps everything it has, valid drops inputs seen
    in test, train drops inputs seen in valid or test.
    """
    by_split: dict[str, dict[tuple[str, ...], Record]] = {s: {} for s in SPLITS}
    for record in records:
        by_split[split_for(record.package)].setdefault(record.key(), record)
    seen: set[tuple[str, str]] = set()
    result: dict[str, list[Record]] = {}
    for split in ("test", "valid", "train"):
        kept = [r for r in by_split[split].values() if (r.task, r.input_text) not in seen]
        if len(kept) < len(by_split[split]):
            log.info(
                "%s: dropped %d examples whose input is held out",
                split,
                len(by_split[split]) - len(kept),
            )
        seen.update((r.task, r.input_text) for r in kept)
        kept.sort(key=lambda r: _order_key(seed, r.key()))
        result[split] = kept
    return result


def _counts(task: str, records: list[Record]) -> Any:
    """Per-split count shown in the manifest: per pair, per template, or a total."""
    if task == "translate":
        return dict(
            sorted(
                Counter(
                    f"{r.src_lang}-{r.tgt_lang}" for r in records if isinstance(r, TranslateRecord)
                ).items()
            )
        )
    if task == "answer":
        return {
            "total": len(records),
            "by_template": dict(
                sorted(Counter(getattr(r, "template", "") for r in records).items())
            ),
        }
    return len(records)


def build_debian(
    lists_dir: Path, out_dir: Path, config: BuildConfig | None = None
) -> dict[str, Any]:
    """Build every task's JSONL files, the monolingual text and the manifest into ``out_dir``.

    Written into a temporary sibling folder first and renamed at the end, so ``out_dir``
    is either the old build or the complete new one. Returns the manifest.
    """
    config = config or BuildConfig()
    started = time.monotonic()
    lists = load_lists(lists_dir, config.languages)

    @functools.cache
    def split_for(package: str) -> str:
        return split_of(lists.source_of(package), config.valid_frac, config.test_frac)

    tasks: dict[str, dict[str, list[Record]]] = {
        "translate": assign_splits(
            translation_examples(lists, config.pairs, config.max_length_ratio),
            split_for,
            config.seed,
        ),
        "summarize": assign_splits(
            summarization_examples(lists, config.min_summary_words), split_for, config.seed
        ),
        "answer": assign_splits(
            answer_examples(
                lists,
                split_for,
                config.seed,
                config.qa_per_package,
                config.qa_choices,
                config.qa_max_context_words,
                config.qa_max_depends,
            ),
            split_for,
            config.seed,
        ),
    }
    monolingual = _monolingual(lists, tasks, split_for, config.seed)

    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "source": "debian-ddtp",
        "inputs": [
            {"file": p.name, "sha256": sha256_file(p), "size": p.stat().st_size}
            for p in sorted(lists.files)
        ],
        "params": asdict(config),
        "counts": {
            task: {split: _counts(task, recs) for split, recs in splits.items()}
            for task, splits in tasks.items()
        },
    }
    manifest["counts"]["monolingual"] = {
        "train": dict(sorted(Counter(lang for lang, _ in monolingual).items()))
    }

    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for task, splits in tasks.items():
            for split, recs in splits.items():
                write_jsonl(tmp / f"{task}.{split}.jsonl", recs)
        with (tmp / "monolingual.train.txt").open("w", encoding="utf-8") as fh:
            fh.writelines(line + "\n" for _, line in monolingual)
        (tmp / "manifest.json").write_text(
            json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=False) + "\n",
            encoding="utf-8",
        )
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("built %s in %.1fs", out_dir, time.monotonic() - started)
    return manifest


def _monolingual(
    lists: Lists,
    tasks: dict[str, dict[str, list[Record]]],
    split_for: Callable[[str], str],
    seed: int,
) -> list[tuple[str, str]]:
    """(lang, line) for training packages only, minus lines that are held-out inputs."""
    held_out = {
        r.input_text for splits in tasks.values() for s in ("valid", "test") for r in splits[s]
    }
    lines: dict[str, str] = {}
    for lang, package, line in monolingual_lines(lists):
        if split_for(package) == "train" and line not in held_out:
            lines.setdefault(line, lang)
    ordered = sorted(lines.items(), key=lambda item: _order_key(seed, (item[1], item[0])))
    return [(lang, line) for line, lang in ordered]


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing an existing folder with one rename each way."""
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        target.rename(old)
    new.rename(target)
    if old.exists():
        shutil.rmtree(old)


__all__ = ["BuildConfig", "build_debian", "lang_code", "split_of"]
