"""Small, fixed evaluation splits cut from a full data build.

The shipped checkpoint's scores are measured on these, and they are committed, so
`sora eval` and the regression test work offline without rebuilding the corpus. The
choice is by hash, so the same build always gives the same sample.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

from model.training.data.records import TASKS, Record, read_jsonl, to_dict, write_jsonl


def group_of(record: Record) -> str:
    """Translation direction, QA template, or "all"."""
    if record.task == "translate":
        return f"{record.src_lang}-{record.tgt_lang}"  # type: ignore[union-attr]
    if record.task == "answer":
        return record.template or "all"  # type: ignore[union-attr]
    return "all"


def _rank(record: Record, seed: int) -> str:
    key = json.dumps(to_dict(record), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def sample_split(
    data_dir: Path,
    out_dir: Path,
    split: str = "test",
    per_group: int = 100,
    min_per_task: int = 300,
    seed: int = 0,
) -> dict[str, dict[str, int]]:
    """Write `{task}.{split}.jsonl` with `per_group` records per group of each task (more
    when a task has few groups, so every task gets about `min_per_task`); returns the
    counts per task and group."""
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, dict[str, int]] = {}
    for task in TASKS:
        path = data_dir / f"{task}.{split}.jsonl"
        if not path.is_file():
            continue
        groups: dict[str, list[Record]] = defaultdict(list)
        for record in read_jsonl(path):
            groups[group_of(record)].append(record)
        chosen: list[Record] = []
        counts[task] = {}
        take = max(per_group, -(-min_per_task // len(groups)))
        for name in sorted(groups):
            picked = sorted(groups[name], key=lambda r: _rank(r, seed))[:take]
            counts[task][name] = len(picked)
            chosen.extend(picked)
        write_jsonl(out_dir / f"{task}.{split}.jsonl", chosen)
    return counts
