"""The running batch: every row being decoded, with its cache and decoding state.

Rows are grouped by sequence (a beam of k is k consecutive rows). When sequences end,
`retire` parks their rows in place (see `KVCache.free`) and `admit` gives parked rows
to newly prefilled sequences, appending only what does not fit: under a steady stream
of requests the cache is not copied when one ends or another begins. Once half the
rows are parked, `retire` compacts the batch instead, so a batch that empties out stops
computing rows nobody uses. Every per-row tensor stays aligned with the cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from model.cache import KVCache, pad_to
from model.sampling import SamplingBatch
from service.engine.request import Sequence


@dataclass
class RunningBatch:
    # Row -> owning sequence (a beam sequence appears on beam_size consecutive rows), or
    # None for a parked row (its sequence ended; the row awaits a newcomer).
    seqs: list[Sequence | None]
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
    # (rows,) the token each row must produce at its first step (NLLB's target code), -1
    # for none; None once every row has taken its first step (the usual case).
    forced: Tensor | None = None
    _watched: list[tuple[int, Sequence]] | None = field(default=None, repr=False)
    _reserved: int | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        """Rows computed per step, parked ones included."""
        return len(self.seqs)

    @property
    def live(self) -> int:
        """Rows of running sequences."""
        return self.size - self.seqs.count(None)

    @property
    def parked(self) -> Tensor | None:
        """(rows,) bool: parked rows, or None when there are none."""
        return self.cache.parked

    def unique_seqs(self) -> list[Sequence]:
        """Each running sequence once, in row order."""
        out: list[Sequence] = []
        for s in self.seqs:
            if s is not None and (not out or out[-1] is not s):
                out.append(s)
        return out

    def watched(self) -> list[tuple[int, Sequence]]:
        """(first row, sequence) for sequences that need per-step attention: streaming
        ones (detokenized token by token) and beam searches. Computed once per batch."""
        if self._watched is None:
            self._watched = [
                (i, s) for i, s in enumerate(self.seqs)
                if s is not None and (s.detok is not None or s.beam is not None)
                and (i == 0 or self.seqs[i - 1] is not s)
            ]
        return self._watched

    def reserved_tokens(self) -> int:
        """Worst-case tokens of every running sequence; summed once per change of rows
        (retire/admit/filter/concat), not at every step's admission check."""
        if self._reserved is None:
            self._reserved = sum(s.reserved_tokens for s in self.unique_seqs())
        return self._reserved

    @torch.inference_mode()  # the tensors come from inference mode (the runner's)
    def retire(self, rows: list[int]) -> RunningBatch | None:
        """The batch without `rows` (their sequences ended): parked in place, or a
        compacted copy once at most half the rows would be live; None if none would."""
        gone = set(rows)
        keep = [i for i, s in enumerate(self.seqs) if s is not None and i not in gone]
        if not keep:
            return None
        if 2 * len(keep) <= self.size:
            return self.filter(keep)
        for i in rows:
            self.seqs[i] = None
        self.cache.free(rows)
        self.sampling.park(rows)
        self.n_generated[rows] = 0
        self._watched = self._reserved = None
        return self

    def filter(self, rows: list[int]) -> RunningBatch:
        """Rows `rows` (sorted row indices) as a new batch."""
        keep = torch.tensor(rows, device=self.tokens.device)
        return RunningBatch(
            seqs=[self.seqs[i] for i in rows],
            cache=self.cache.select(keep),
            sampling=self.sampling.select(keep),
            tokens=self.tokens[keep],
            generated=self.generated[keep],
            n_generated=self.n_generated[keep],
            logprob=self.logprob[keep],
            forced=None if self.forced is None else self.forced[keep],
        )

    def reorder(self, index: Tensor) -> None:
        """Beam search: each row continues from row `index[row]`'s history."""
        self.cache = self.cache.select(index)
        self.generated = self.generated[index]
        self.n_generated = self.n_generated[index]
        self.logprob = self.logprob[index]

    def step_done(self) -> None:
        """After a decode step: parked rows stay at zero tokens generated."""
        if self.parked is not None:
            self.n_generated.masked_fill_(self.parked, 0)

    @torch.inference_mode()
    def admit(self, new: RunningBatch) -> RunningBatch:
        """This batch with the freshly prefilled rows of `new`: single-row sequences
        take parked rows, in place; beams (k consecutive rows) and the rest append.
        Appending copies the batch anyway, so the rows still parked are dropped then:
        the rows computed never exceed the live ones the scheduler admitted against."""
        holes = [i for i, s in enumerate(self.seqs) if s is None]
        singles = [i for i, s in enumerate(new.seqs) if s is not None and s.rows == 1]
        taken = singles[: len(holes)]
        if taken:
            self._fill(holes[: len(taken)], new, taken)
            if len(taken) == new.size:
                return self
            chosen = set(taken)
            new = new.filter([i for i in range(new.size) if i not in chosen])
        live = [i for i, s in enumerate(self.seqs) if s is not None]
        return RunningBatch.concat([self if len(live) == self.size else self.filter(live), new])

    def _fill(self, rows: list[int], new: RunningBatch, taken: list[int]) -> None:
        """Parked `rows` take rows `taken` of `new`, in place."""
        fresh = new if len(taken) == new.size else new.filter(taken)
        width = max(self.generated.shape[1], fresh.generated.shape[1])
        self.generated = pad_to(self.generated, 1, width)
        idx = torch.tensor(rows, device=self.tokens.device)
        self.cache.fill(rows, fresh.cache)
        self.sampling.fill(rows, fresh.sampling)
        self.tokens.index_copy_(0, idx, fresh.tokens)
        self.generated.index_copy_(0, idx, pad_to(fresh.generated, 1, width))
        self.n_generated.index_copy_(0, idx, fresh.n_generated)
        self.logprob.index_copy_(0, idx, fresh.logprob)
        if fresh.forced is not None:
            self.forced = self.forced_or_none()
            self.forced.index_copy_(0, idx, fresh.forced)
        elif self.forced is not None:
            self.forced[idx] = -1
        for row, seq in zip(rows, fresh.seqs, strict=True):
            self.seqs[row] = seq
        self._watched = self._reserved = None

    @staticmethod
    def concat(batches: list[RunningBatch]) -> RunningBatch:
        if len(batches) == 1:
            return batches[0]
        width = max(b.generated.shape[1] for b in batches)
        return RunningBatch(
            seqs=[s for b in batches for s in b.seqs],
            cache=KVCache.concat([b.cache for b in batches]),
            sampling=SamplingBatch.concat([b.sampling for b in batches]),
            tokens=torch.cat([b.tokens for b in batches]),
            generated=torch.cat([pad_to(b.generated, 1, width) for b in batches]),
            n_generated=torch.cat([b.n_generated for b in batches]),
            logprob=torch.cat([b.logprob for b in batches]),
            forced=None if all(b.forced is None for b in batches)
            else torch.cat([b.forced_or_none() for b in batches]),
        )

    def forced_or_none(self) -> Tensor:
        """(rows,) the forced first tokens, -1 (none) where no row has one."""
        if self.forced is not None:
            return self.forced
        return torch.full((self.size,), -1, dtype=torch.long, device=self.tokens.device)

