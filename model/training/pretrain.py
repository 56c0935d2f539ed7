"""Stage 2: denoising pre-training with T5 span corruption on monolingual text.

About `noise_density` of each line's tokens, in spans of mean length
`mean_span_length`, are replaced in the source by sentinels; the target lists each
sentinel followed by the tokens it hid:

    source: The <extra_0> fox jumps <extra_1> dog </s>
    target: <extra_0> quick brown <extra_1> over the lazy </s>

As in T5, the number of noise tokens and spans depends only on the line's length, so
batch shapes are known before the noise is drawn; where the spans fall is drawn from a
generator seeded by (seed, epoch, example), so any batch can be rebuilt on resume and
on every rank without shared RNG state.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.tokenizer import N_SENTINELS, SoraTokenizer
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
from model.training.data.records import SummarizeRecord, TranslateRecord
from model.training.distributed import DistContext
from model.training.finetune import read_split
from model.training.recipe import PretrainRecipe

log = logging.getLogger(__name__)

CACHE_VERSION = 1
ENCODE_CHUNK = 20_000


def noise_counts(
    length: np.ndarray, density: float, mean_span: float
) -> tuple[np.ndarray, np.ndarray]:
    """(noise tokens, spans) per line length; lines must have >= 2 tokens."""
    noise = np.clip(np.rint(length * density), 1, length - 1).astype(np.int64)
    spans = np.maximum(1, np.rint(noise / mean_span)).astype(np.int64)
    spans = np.minimum(spans, np.minimum(noise, np.minimum(length - noise, N_SENTINELS)))
    return noise, spans


def _partition(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """n split into k positive parts, uniformly over such splits."""
    if k == 1:
        return np.asarray([n])
    cuts = np.sort(rng.choice(np.arange(1, n), size=k - 1, replace=False))
    return np.diff(np.concatenate([[0], cuts, [n]]))


def span_corrupt(
    tokens: np.ndarray, n_noise: int, n_spans: int, sentinels: list[int], eos_id: int,
    rng: np.random.Generator,
) -> tuple[list[int], list[int]]:
    """(source with sentinels + eos, bare target of sentinel+span pairs)."""
    noise_lens = _partition(n_noise, n_spans, rng)
    keep_lens = _partition(len(tokens) - n_noise, n_spans, rng)
    src: list[int] = []
    tgt: list[int] = []
    pos = 0
    for i in range(n_spans):
        src.extend(tokens[pos : pos + keep_lens[i]].tolist())
        pos += int(keep_lens[i])
        src.append(sentinels[i])
        tgt.append(sentinels[i])
        tgt.extend(tokens[pos : pos + noise_lens[i]].tolist())
        pos += int(noise_lens[i])
    src.append(eos_id)
    return src, tgt


def _encode_lines(tokenizer: SoraTokenizer, lines: list[str], max_len: int) -> TokenTable:
    rows: list[list[int]] = []
    for i in range(0, len(lines), ENCODE_CHUNK):
        for ids in tokenizer.encode_batch(lines[i : i + ENCODE_CHUNK]):
            if len(ids) >= 2:
                rows.append(ids[:max_len])
    return TokenTable.from_lists(rows)


def cached_lines(
    tokenizer: SoraTokenizer, name: str, lines_of: list[str] | Path, max_len: int,
    cache_dir: Path, dist: DistContext,
) -> TokenTable:
    """Tokenized text lines (a file or a list), built by rank 0 and cached on disk."""
    key = hashlib.sha256()
    key.update(tokenizer.tokenizer.to_str().encode())
    if isinstance(lines_of, Path):
        with lines_of.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                key.update(chunk)
    else:
        for line in lines_of:
            key.update(line.encode() + b"\n")
    key.update(f"{CACHE_VERSION}:{max_len}".encode())
    path = cache_dir / f"{name}-{key.hexdigest()[:16]}.safetensors"
    if dist.is_main and not path.is_file():
        if isinstance(lines_of, Path):
            text = lines_of.read_text(encoding="utf-8").splitlines()
            lines = [x for x in text if x.strip()]
        else:
            lines = lines_of
        table = _encode_lines(tokenizer, lines, max_len)
        cache_dir.mkdir(parents=True, exist_ok=True)
        save_tables(path, {"lines": table})
        log.info("tokenized %d %s lines -> %s", len(table), name, path.name)
    dist.barrier()
    return load_tables(path, ["lines"])["lines"]


@dataclass
class DenoisingData:
    """Span-corruption examples over tokenized lines (`StageData` for the Trainer)."""

    train: TokenTable
    valid: TokenTable
    recipe: PretrainRecipe
    seed: int
    sentinels: list[int]
    pad_id: int
    bos_id: int
    eos_id: int
    world_size: int = 1
    _valid: dict[tuple[int, int], list[Batch]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._counts = self._lengths(self.train)

    def _lengths(self, table: TokenTable) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        length = table.lengths
        noise, spans = noise_counts(length, self.recipe.noise_density, self.recipe.mean_span_length)
        # source: kept tokens + one sentinel per span + eos; target: spans + sentinels
        return noise, spans, length - noise + spans + 1, noise + spans

    def _example(self, table: TokenTable, counts: tuple[np.ndarray, ...], i: int,
                 rng: np.random.Generator) -> tuple[list[int], list[int]]:
        noise, spans = counts[0], counts[1]
        return span_corrupt(table[i], int(noise[i]), int(spans[i]), self.sentinels,
                            self.eos_id, rng)

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        rng = epoch_rng(self.seed, epoch, salt=3)
        order = rng.permutation(len(self.train))
        return token_budget_batches(order, self._counts[2], self._counts[3],
                                    self.recipe.batch_tokens, rng, min_rows=self.world_size)

    def target_tokens(self, rows: np.ndarray) -> int:
        return int((self._counts[3][rows] + 1).sum())

    def make_batch(self, rows: np.ndarray, epoch: int) -> Batch:
        pairs = [
            self._example(self.train, self._counts, int(i),
                          np.random.default_rng([self.seed, epoch, int(i), 4]))
            for i in rows
        ]
        return collate([p[0] for p in pairs], [p[1] for p in pairs], self.pad_id,
                       self.bos_id, self.eos_id, rows.tolist())

    def valid_batches(self, rank: int, world_size: int) -> list[Batch]:
        if (rank, world_size) not in self._valid:
            counts = self._lengths(self.valid)
            batches = token_budget_batches(
                np.arange(len(self.valid)), counts[2], counts[3], self.recipe.batch_tokens,
                np.random.default_rng(0), min_rows=world_size)
            out = []
            for rows in batches:
                mine = shard(rows, rank, world_size)
                pairs = [self._example(self.valid, counts, int(i),
                                       np.random.default_rng([self.seed, int(i), 5]))
                         for i in mine]
                out.append(collate([p[0] for p in pairs], [p[1] for p in pairs], self.pad_id,
                                   self.bos_id, self.eos_id, mine.tolist()))
            self._valid[(rank, world_size)] = out
        return self._valid[(rank, world_size)]


def build_data(
    tokenizer: SoraTokenizer, data_dir: Path, recipe: PretrainRecipe, seed: int,
    max_len: int, cache_dir: Path, dist: DistContext,
) -> DenoisingData:
    """Monolingual training lines; held-out task texts (never trained on) for validation."""
    train = cached_lines(tokenizer, "monolingual", data_dir / "monolingual.train.txt",
                         max_len - 1, cache_dir, dist)
    held_out: list[str] = []
    for r in read_split(data_dir, "valid", ["translate"], recipe.valid_examples):
        if isinstance(r, TranslateRecord | SummarizeRecord):
            held_out += [r.source, r.target]
    valid = cached_lines(tokenizer, "denoise-valid", held_out[: recipe.valid_examples],
                         max_len - 1, cache_dir, dist)
    sentinels = [tokenizer.sentinel_id(i) for i in range(N_SENTINELS)]
    return DenoisingData(train, valid, recipe, seed, sentinels, tokenizer.pad_id,
                         tokenizer.bos_id, tokenizer.eos_id, dist.world_size)
