"""Stage 3: multi-task fine-tuning (translate both ways, summarize, answer) by mixture.

Records become encoder inputs exactly as serving builds them (`<task> [<2xx>] text
[<sep> context] </s>`) and bare target tokens (the batcher adds bos/eos). Tokenized
splits are cached in OUT/.work/cache (safetensors, keyed by the tokenizer and the data
files' sha256), so a resumed run does not tokenize again.

An epoch keeps the total example count and gives each task its mixture share of it,
re-sampling a task's examples (up- or down-sampling) to fill the share.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model.checkpoint import sha256_file
from model.generation import generate
from model.sampling import DecodingParams
from model.sora import Sora
from model.tokenizer import SoraTokenizer
from model.training.batching import (
    Batch,
    TokenTable,
    collate,
    epoch_rng,
    load_tables,
    save_tables,
    shard,
    token_budget_batches,
)
from model.training.data.records import (
    AnswerRecord,
    Record,
    SummarizeRecord,
    TranslateRecord,
    read_jsonl,
)
from model.training.distributed import DistContext
from model.training.recipe import TASKS

log = logging.getLogger(__name__)

CACHE_VERSION = 1
ENCODE_CHUNK = 20_000


@dataclass
class Examples:
    """Tokenized examples of one split: sources (with prefix and eos), bare targets."""

    src: TokenTable
    tgt: TokenTable
    task: np.ndarray  # (rows,) int8 index into TASKS

    def __len__(self) -> int:
        return len(self.src)


def truncate_source(ids: list[int], limit: int) -> list[int]:
    """Too long for the encoder: keep the beginning and the closing </s>."""
    return ids if len(ids) <= limit else [*ids[: limit - 1], ids[-1]]


def _chunked_encode(tokenizer: SoraTokenizer, texts: list[str]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in range(0, len(texts), ENCODE_CHUNK):
        out.extend(tokenizer.encode_batch(texts[i : i + ENCODE_CHUNK]))
    return out


def _record_fields(r: Record) -> tuple[str, str, str | None, str | None, str | None]:
    """(text, target, target_lang, source_lang, context) of a record."""
    if isinstance(r, TranslateRecord):
        return r.source, r.target, r.tgt_lang, r.src_lang, None
    if isinstance(r, SummarizeRecord):
        return r.source, r.target, None, None, None
    return r.question, r.answer, None, None, r.context


def _encode_prompted(
    tokenizer: SoraTokenizer, records: Sequence[Record], max_src: int, max_tgt: int
) -> Examples:
    """An imported model's examples: each source built by its prompting, exactly as
    serving builds it (a text prefix, a target-language token, ...), each target by its
    target-side tokenizer after the tokens generation forces first (NLLB's target
    language code), so the model learns to continue from them, or (mBART-cc25) after the
    decoder's start token, which `collate` wraps round (`PairData.wrap_start`)."""
    sources, tgts = [], []
    for r in records:
        text, target, tgt_lang, src_lang, context = _record_fields(r)
        ids = tokenizer.source_ids(r.task, text, target_lang=tgt_lang, context=context,
                                   source_lang=src_lang)
        sources.append(truncate_source(ids, max_src))
        forced = tokenizer.forced_ids(r.task, tgt_lang)
        tgts.append([*forced, *tokenizer.encode_target(target)][: max_tgt - 1])
    task = np.asarray([TASKS.index(r.task) for r in records], dtype=np.int8)
    return Examples(TokenTable.from_lists(sources), TokenTable.from_lists(tgts), task)


def encode_records(
    tokenizer: SoraTokenizer, records: Sequence[Record], max_src: int, max_tgt: int
) -> Examples:
    """Batch-encode records into the same ids `SoraTokenizer.source_ids` builds."""
    if tokenizer.prompting.style != "sora":
        return _encode_prompted(tokenizer, records, max_src, max_tgt)
    texts, targets, extra = [], [], []
    for r in records:
        if isinstance(r, TranslateRecord | SummarizeRecord):
            texts.append(r.source)
            targets.append(r.target)
        else:
            texts.append(r.question)
            targets.append(r.answer)
            extra.append(r.context)
    enc_text = _chunked_encode(tokenizer, texts)
    enc_tgt = _chunked_encode(tokenizer, targets)
    enc_ctx = iter(_chunked_encode(tokenizer, extra))
    sources: list[list[int]] = []
    for r, ids in zip(records, enc_text, strict=True):
        prefix = [tokenizer.task_id(r.task)]
        if isinstance(r, TranslateRecord):
            prefix.append(tokenizer.lang_id(r.tgt_lang))
        suffix: list[int] = []
        if isinstance(r, AnswerRecord):
            ctx = next(enc_ctx)
            if r.context:
                suffix = [tokenizer.sep_id, *ctx]
        sources.append(truncate_source([*prefix, *ids, *suffix, tokenizer.eos_id], max_src))
    tgts = [t[: max_tgt - 1] for t in enc_tgt]
    task = np.asarray([TASKS.index(r.task) for r in records], dtype=np.int8)
    return Examples(TokenTable.from_lists(sources), TokenTable.from_lists(tgts), task)


def read_split(data_dir: Path, split: str, tasks: Sequence[str], limit: int = 0) -> list[Record]:
    """Records of `tasks` in one split (the first `limit` per task when limit > 0)."""
    records: list[Record] = []
    for task in tasks:
        path = data_dir / f"{task}.{split}.jsonl"
        for n, r in enumerate(read_jsonl(path), 1):
            records.append(r)
            if limit and n >= limit:
                break
    return records


def cached_examples(
    tokenizer: SoraTokenizer,
    data_dir: Path,
    split: str,
    tasks: Sequence[str],
    max_src: int,
    max_tgt: int,
    cache_dir: Path,
    dist: DistContext,
    limit: int = 0,
) -> Examples:
    """Tokenized records of a split, built once by rank 0 and cached on disk."""
    key = hashlib.sha256()
    key.update(tokenizer.tokenizer.to_str().encode())
    if tokenizer.target is not None:
        key.update(tokenizer.target.to_str().encode())
    key.update(json.dumps(tokenizer.prompting.to_dict(), sort_keys=True).encode())
    for task in tasks:
        key.update(f"{task}:{sha256_file(data_dir / f'{task}.{split}.jsonl')}".encode())
    key.update(f"{CACHE_VERSION}:{split}:{max_src}:{max_tgt}:{limit}".encode())
    path = cache_dir / f"{split}-{key.hexdigest()[:16]}.safetensors"
    if dist.is_main and not path.is_file():
        records = read_split(data_dir, split, tasks, limit)
        ex = encode_records(tokenizer, records, max_src, max_tgt)
        cache_dir.mkdir(parents=True, exist_ok=True)
        save_tables(path, {"src": ex.src, "tgt": ex.tgt,
                           "task": TokenTable(ex.task.astype(np.int32),
                                              np.arange(len(ex.task) + 1, dtype=np.int64))})
        log.info("tokenized %d %s examples (%s) -> %s", len(ex), split, ",".join(tasks), path.name)
    dist.barrier()
    t = load_tables(path, ["src", "tgt", "task"])
    return Examples(t["src"], t["tgt"], t["task"].tokens.astype(np.int8))


@dataclass
class PairData:
    """Multi-task source/target examples for the Trainer (`StageData`)."""

    train: Examples
    valid: Examples
    mixture: dict[str, float]
    batch_tokens: int
    seed: int
    pad_id: int
    bos_id: int
    eos_id: int
    world_size: int = 1
    wrap_start: bool = False  # each target starts with its decoder start token (`collate`)
    _valid: dict[tuple[int, int], list[Batch]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._src_len = self.train.src.lengths
        self._tgt_len = self.train.tgt.lengths
        self._by_task = {
            t: np.flatnonzero(self.train.task == i) for i, t in enumerate(TASKS)
        }
        for task, w in self.mixture.items():
            if w > 0 and not len(self._by_task[task]):
                raise ValueError(f"mixture weight for {task} is {w} but it has no examples")

    def epoch_indices(self, epoch: int) -> np.ndarray:
        """This epoch's examples: each task re-sampled to its mixture share."""
        rng = epoch_rng(self.seed, epoch, salt=1)
        active = {t: w for t, w in self.mixture.items() if w > 0}
        total = sum(len(self._by_task[t]) for t in active)
        weight_sum = sum(active.values())
        parts = []
        for task in TASKS:
            if task not in active:
                continue
            pool = self._by_task[task]
            want = round(active[task] / weight_sum * total)
            reps = [pool[rng.permutation(len(pool))] for _ in range(-(-want // len(pool)))]
            parts.append(np.concatenate(reps)[:want])
        order = np.concatenate(parts)
        return order[rng.permutation(len(order))]

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        rng = epoch_rng(self.seed, epoch, salt=2)
        return token_budget_batches(self.epoch_indices(epoch), self._src_len, self._tgt_len,
                                    self.batch_tokens, rng, min_rows=self.world_size)

    def target_tokens(self, rows: np.ndarray) -> int:
        return int((self._tgt_len[rows] + 1).sum())

    def make_batch(self, rows: np.ndarray, epoch: int) -> Batch:
        return collate([self.train.src[i] for i in rows], [self.train.tgt[i] for i in rows],
                       self.pad_id, self.bos_id, self.eos_id, rows.tolist(), self.wrap_start)

    def valid_batches(self, rank: int, world_size: int) -> list[Batch]:
        if (rank, world_size) not in self._valid:
            v = self.valid
            order = np.arange(len(v))
            batches = token_budget_batches(order, v.src.lengths, v.tgt.lengths,
                                           self.batch_tokens, np.random.default_rng(0),
                                           min_rows=world_size)
            self._valid[(rank, world_size)] = [
                collate([v.src[i] for i in b], [v.tgt[i] for i in b], self.pad_id,
                        self.bos_id, self.eos_id, b.tolist(), self.wrap_start)
                for b in (shard(rows, rank, world_size) for rows in batches)
            ]
        return self._valid[(rank, world_size)]


# -- quick BLEU during validation ---------------------------------------------------------


@dataclass
class QuickBleu:
    """Greedy-decode a few hundred validation translations and score them (sacrebleu).

    Per-target-language corpus BLEU (Chinese needs its own tokenizer), averaged by
    example count. Cheap enough to run at every validation on a CPU."""

    tokenizer: SoraTokenizer
    sources: list[list[int]]
    references: list[str]
    langs: list[str]
    max_new_tokens: int
    batch_size: int = 64

    @classmethod
    def from_records(cls, tokenizer: SoraTokenizer, records: Sequence[Record], n: int,
                     max_src: int, max_tgt: int) -> QuickBleu:
        rs = [r for r in records if isinstance(r, TranslateRecord)][:n]
        return cls(
            tokenizer,
            [truncate_source(tokenizer.source_ids("translate", r.source, target_lang=r.tgt_lang,
                                                  source_lang=r.src_lang), max_src)
             for r in rs],
            [r.target for r in rs], [r.tgt_lang for r in rs], max_tgt,
        )

    def hypotheses(self, model: Sora) -> list[str]:
        params = DecodingParams(strategy="greedy", max_new_tokens=self.max_new_tokens)
        order = sorted(range(len(self.sources)), key=lambda i: -len(self.sources[i]))
        out = [""] * len(order)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            results = generate(model, self.tokenizer, [self.sources[i] for i in idx], params)
            for i, r in zip(idx, results, strict=True):
                out[i] = r.text.strip()
        return out

    def __call__(self, model: Sora) -> dict[str, float]:
        if not self.sources:
            return {}
        was_training = model.training
        model.eval()
        with torch.no_grad():
            hyps = self.hypotheses(model)
        model.train(was_training)
        return self.score(hyps)

    def score(self, hyps: list[str]) -> dict[str, float]:
        from model.training.metrics import bleu, chrf

        if not hyps:
            return {}
        total = 0.0
        for lang in sorted(set(self.langs)):
            idx = [i for i, x in enumerate(self.langs) if x == lang]
            score = bleu([hyps[i] for i in idx], [self.references[i] for i in idx], lang)
            total += score * len(idx)
        return {"bleu": total / len(hyps), "chrf": chrf(hyps, self.references)}
