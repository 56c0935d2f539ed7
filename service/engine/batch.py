"""The running batch: every row being decoded, with its cache and decoding state.

Rows are grouped by sequence (a beam of k is k consecutive rows). `filter` drops the
rows of finished or cancelled sequences and `concat` appends newly admitted ones;
both keep every per-row tensor aligned with the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from model.cache import KVCache
from model.sampling import SamplingBatch
from service.engine.request import Sequence


@dataclass
class RunningBatch:
    # Row -> owning sequence (a beam sequence appears on beam_size consecutive rows).
    seqs: list[Sequence]
    # Decoder state: self/cross attention keys and values, per-row positions.
    cache: KVCache
    # Per-row decoding settings (temperature, top-k/p, min/max length, eos handling).
    sampling: SamplingBatch
    # (rows,) the token each row feeds to the next decode step.
    tokens: Tensor
    # (rows, capacity) tokens generated so far; (rows,) how many; (rows,) sum logprob.
    generated: Tensor
    n_generated: Tensor
    logprob: Tensor
    _watched: list[tuple[int, Sequence]] | None = field(default=None, repr=False)
    _reserved: int | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return len(self.seqs)

    def unique_seqs(self) -> list[Sequence]:
        """Each sequence once, in row order."""
        out: list[Sequence] = []
        for s in self.seqs:
            if not out or out[-1] is not s:
                out.append(s)
        return out

    def watched(self) -> list[tuple[int, Sequence]]:
        """(first row, sequence) for sequences that need per-step attention: streaming
        ones (detokenized token by token) and beam searches. Computed once per batch."""
        if self._watched is None:
            self._watched = [
                (i, s) for i, s in enumerate(self.seqs)
                if (s.detok is not None or s.beam is not None)
                and (i == 0 or self.seqs[i - 1] is not s)
            ]
        return self._watched

    def reserved_tokens(self) -> int:
        """Worst-case tokens of every row; the rows only change in a new batch object
        (filter/concat), so this is summed once, not at every step's admission check."""
        if self._reserved is None:
            self._reserved = sum(s.reserved_tokens for s in self.unique_seqs())
        return self._reserved

    def filter(self, keep: Tensor) -> RunningBatch:
        """Rows `keep` (sorted row indices) as a new batch."""
        rows = keep.tolist()
        return RunningBatch(
            seqs=[self.seqs[i] for i in rows],
            cache=self.cache.select(keep),
            sampling=self.sampling.select(keep),
            tokens=self.tokens[keep],
            generated=self.generated[keep],
            n_generated=self.n_generated[keep],
            logprob=self.logprob[keep],
        )

    def reorder(self, index: Tensor) -> None:
        """Beam search: each row continues from row `index[row]`'s history."""
        self.cache = self.cache.select(index)
        self.generated = self.generated[index]
        self.n_generated = self.n_generated[index]
        self.logprob = self.logprob[index]

    @staticmethod
    def concat(batches: list[RunningBatch]) -> RunningBatch:
        if len(batches) == 1:
            return batches[0]
        width = max(b.generated.shape[1] for b in batches)

        def widen(t: Tensor) -> Tensor:
            if t.shape[1] == width:
                return t
            return torch.cat([t, t.new_zeros(t.shape[0], width - t.shape[1])], dim=1)

        return RunningBatch(
            seqs=[s for b in batches for s in b.seqs],
            cache=KVCache.concat([b.cache for b in batches]),
            sampling=SamplingBatch.concat([b.sampling for b in batches]),
            tokens=torch.cat([b.tokens for b in batches]),
            generated=torch.cat([widen(b.generated) for b in batches]),
            n_generated=torch.cat([b.n_generated for b in batches]),
            logprob=torch.cat([b.logprob for b in batches]),
        )
