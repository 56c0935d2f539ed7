"""Token-budget batches: examples of similar length grouped so padding stays small.

Examples live in flat int32 arrays (`TokenTable`) rather than Python lists, so a few
hundred thousand of them cost megabytes, not gigabytes. An epoch's batch list is a pure
function of (seed, epoch, lengths): a resumed run rebuilds it and skips to its saved
position, and every rank of a distributed run builds the same list and takes its own
rows of each batch (`shard`), so ranks never overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch import Tensor

IGNORE_INDEX = -100
POOL_BATCHES = 64  # batches' worth of examples sorted together (more = less padding)


Tokens = Sequence[int] | np.ndarray  # one sequence of token ids


@dataclass
class TokenTable:
    """Variable-length token sequences: row i is tokens[offsets[i]:offsets[i+1]]."""

    tokens: np.ndarray  # (total,) int32
    offsets: np.ndarray  # (rows + 1,) int64

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]]) -> TokenTable:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.fromiter((t for r in rows for t in r), dtype=np.int32, count=int(offsets[-1]))
        return cls(tokens, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def to_arrays(self, prefix: str, out: dict[str, np.ndarray]) -> None:
        out[f"{prefix}.tokens"] = self.tokens
        out[f"{prefix}.offsets"] = self.offsets

    @classmethod
    def load(cls, tensors: dict[str, np.ndarray], prefix: str) -> TokenTable:
        return cls(tensors[f"{prefix}.tokens"], tensors[f"{prefix}.offsets"])


def save_tables(path: Path, tables: dict[str, TokenTable]) -> None:
    """Write tables to one safetensors file (atomically: temp file, then rename)."""
    out: dict[str, np.ndarray] = {}
    for name, table in tables.items():
        table.to_arrays(name, out)
    tmp = path.with_name(path.name + ".tmp")
    save_file(out, str(tmp))
    tmp.replace(path)


def load_tables(path: Path, names: Sequence[str]) -> dict[str, TokenTable]:
    tensors = load_file(str(path))
    return {n: TokenTable.load(tensors, n) for n in names}


@dataclass
class Batch:
    """Right-padded tensors for one (micro-)batch; `labels` is -100 where ignored."""

    src: Tensor  # (batch, src_len) long
    tgt: Tensor  # (batch, tgt_len) long, decoder inputs starting with bos
    labels: Tensor  # (batch, tgt_len) long
    index: list[int]  # example indices, for tasks that need the raw records
    n_tokens: int = 0  # real (non-pad) source + target tokens: the throughput unit

    @property
    def n_targets(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    def to(self, device: torch.device) -> Batch:
        return Batch(
            self.src.to(device), self.tgt.to(device), self.labels.to(device), self.index,
            self.n_tokens,
        )


def collate(
    sources: Sequence[Tokens],
    targets: Sequence[Tokens],
    pad_id: int,
    bos_id: int,
    eos_id: int,
    index: list[int],
    wrap_start: bool = False,
) -> Batch:
    """Targets are bare token lists; decoder inputs get bos, labels get eos. With
    `wrap_start` (mBART-cc25) a target's first token is its decoder start token (the
    target's language code) in place of bos, and closes its labels after eos: decoder
    input `code text </s>`, labels `text </s> code`, as transformers' shift_tokens_right
    makes them."""
    n = len(sources)
    src_len = max(len(s) for s in sources)
    tgt_len = max(len(t) for t in targets) + 1
    src = torch.full((n, src_len), pad_id, dtype=torch.long)
    tgt = torch.full((n, tgt_len), pad_id, dtype=torch.long)
    labels = torch.full((n, tgt_len), IGNORE_INDEX, dtype=torch.long)
    for i, (s, t) in enumerate(zip(sources, targets, strict=True)):
        src[i, : len(s)] = torch.as_tensor(np.asarray(s, dtype=np.int64))
        tt = torch.as_tensor(np.asarray(t, dtype=np.int64))
        if wrap_start:
            tgt[i, : len(t) + 1] = torch.cat([tt, tt.new_tensor([eos_id])])
            labels[i, : len(t) + 1] = torch.cat([tt[1:], tt.new_tensor([eos_id]), tt[:1]])
            continue
        tgt[i, 0] = bos_id
        tgt[i, 1 : len(t) + 1] = tt
        labels[i, : len(t)] = tt
        labels[i, len(t)] = eos_id
    n_tokens = sum(len(s) for s in sources) + sum(len(t) + 1 for t in targets)
    return Batch(src, tgt, labels, index, n_tokens)


def epoch_rng(seed: int, epoch: int, salt: int = 0) -> np.random.Generator:
    """The generator that orders one epoch: a pure function of its arguments."""
    return np.random.default_rng([seed, epoch, salt])


def token_budget_batches(
    order: np.ndarray,
    src_lengths: np.ndarray,
    tgt_lengths: np.ndarray,
    batch_tokens: int,
    rng: np.random.Generator,
    min_rows: int = 1,
) -> list[np.ndarray]:
    """Cut `order` (example indices, already shuffled) into batches whose padded size
    rows * (max src + max tgt) stays within `batch_tokens`.

    Pools of ~POOL_BATCHES batches are sorted by length before cutting (little padding)
    and the batches are shuffled afterwards (no length curriculum). Batches with fewer
    than `min_rows` rows (one rank each, in a distributed run) are dropped."""
    cost = src_lengths + tgt_lengths + 1
    mean = float(cost[order].mean()) if len(order) else 1.0
    pool = max(1, int(POOL_BATCHES * batch_tokens / max(mean, 1.0)))
    batches: list[np.ndarray] = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.lexsort((tgt_lengths[chunk], src_lengths[chunk]))]
        rows: list[int] = []
        max_src = max_tgt = 0
        for i in chunk.tolist():
            s, t = max(max_src, int(src_lengths[i])), max(max_tgt, int(tgt_lengths[i]) + 1)
            if rows and (len(rows) + 1) * (s + t) > batch_tokens:
                batches.append(np.asarray(rows, dtype=np.int64))
                rows, s, t = [], int(src_lengths[i]), int(tgt_lengths[i]) + 1
            rows.append(i)
            max_src, max_tgt = s, t
        if rows:
            batches.append(np.asarray(rows, dtype=np.int64))
    batches = [b for b in batches if len(b) >= min_rows]
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def shard(rows: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's rows of a batch. Rows are length-sorted, so striding keeps the ranks'
    shapes (and work) close; together the shards are the batch, without overlap."""
    return rows[rank::world_size]
