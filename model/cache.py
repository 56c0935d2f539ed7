"""The decoder's KV cache, shaped for continuous batching.

Each row keeps its self-attention keys/values in slots 0.. of its own: row r's next key
goes to slot `positions[r]`, and attention reads slots <= that position (a mask is only
built when rows are at different positions). So rows of different ages sit side by side
without padding, and a row's slots beyond its position are never read: stale values
there are harmless. Cross-attention keys/values of sources of different lengths are
right-padded.

Two ways to change the rows. `select` / `concat` build a new cache (beam reordering,
offline generation). `free` / `fill` work in place for a serving engine: a finished
row is parked (its compute continues, its output is ignored) and a newly prefilled row
takes the parked slot later, so a step never copies the whole cache because one request
ended or another began (a copy of a 64-row cache costs about as much as a decode step).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class KVCache:
    # Self-attention, one buffer per decoder layer: (batch, heads, capacity, head_dim).
    self_k: list[Tensor]
    self_v: list[Tensor]
    # Cross-attention, projected once per source: (batch, heads, src_len, head_dim).
    cross_k: list[Tensor]
    cross_v: list[Tensor]
    # (batch, src_len) bool: source position is a real token (False = right padding).
    src_valid: Tensor
    # (batch,) long: tokens each row has decoded, = its next token's position and slot.
    positions: Tensor
    # Whether any source position is padding; lets cross-attention skip the mask.
    src_padded: bool = False
    # Host-side copies, so a step needs no device sync: an upper bound of `positions`
    # (exact after every row change) and whether all rows share one position.
    max_position: int = 0
    aligned: bool = True
    # (batch,) bool: parked rows (see `free`), or None when there are none.
    parked: Tensor | None = None
    # Per step (begin_step): the slots attention reads, whether this step writes and
    # masks every row by index (see begin_step), the self-attention mask, and
    # arange(batch) for slot writes.
    _span: int = 1
    _uniform: bool = False
    _mask: Tensor | None = None
    _rows: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.positions.shape[0])

    @property
    def capacity(self) -> int:
        return int(self.self_k[0].shape[2])

    @property
    def span(self) -> int:
        """Slots this step's attention reads: up to the furthest row's new slot."""
        return self._span

    def self_mask(self) -> Tensor | None:
        """(batch, 1, 1, span) mask of the slots each row may attend to this step, or
        None when every row is at the same position (every slot read is the row's own)."""
        return self._mask

    def cross_mask(self) -> Tensor | None:
        if not (self._uniform or self.src_padded):
            return None
        return self.src_valid[:, None, None, :]

    def _reserve(self, slots: int) -> None:
        """At least `slots` slots per row, doubling so growth is amortised."""
        if slots <= self.capacity:
            return
        extra = max(slots, 2 * self.capacity) - self.capacity
        b, h, _, d = self.self_k[0].shape
        pad = self.self_k[0].new_zeros(b, h, extra, d)
        self.self_k = [torch.cat([k, pad], dim=2) for k in self.self_k]
        self.self_v = [torch.cat([v, pad], dim=2) for v in self.self_v]

    def begin_step(self, uniform: bool = False) -> None:
        """Make room for every row's next slot and build this step's mask.

        `uniform` makes every step look alike to a compiled decoder, so that one graph
        serves every step and batch: keys are written by index and attention is masked
        even when the rows are aligned, the source mask is always given, and the span is
        at least 2 and below the capacity (sizes 1 and "all of it" would each make
        torch.compile specialize a graph of their own)."""
        self._uniform = uniform
        self._span = self.max_position + 1
        if uniform:
            self._span = max(self._span, 2)
            self._reserve(self._span + 1)
        else:
            self._reserve(self._span)
        if not uniform and self.aligned:
            self._mask = None
        else:
            slots = torch.arange(self._span, device=self.positions.device)
            self._mask = (slots[None, :] <= self.positions[:, None])[:, None, None, :]
            if self._rows is None or self._rows.shape[0] != self.batch_size:
                self._rows = torch.arange(self.batch_size, device=self.positions.device)

    def write(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store this step's (batch, heads, 1, head_dim) key/value of `layer` at each
        row's slot; returns the keys/values attention reads (slots < span)."""
        keys, values = self.self_k[layer], self.self_v[layer]
        if self._mask is None:  # every row at one position (see begin_step)
            p = self.max_position
            keys[:, :, p : p + 1] = k
            values[:, :, p : p + 1] = v
        else:
            keys[self._rows, :, self.positions] = k[:, :, 0]
            values[self._rows, :, self.positions] = v[:, :, 0]
        return keys[:, :, : self.span], values[:, :, : self.span]

    def end_step(self) -> None:
        self.positions += 1
        self.max_position += 1
        if self.parked is not None:
            self.positions.masked_fill_(self.parked, 0)

    def _sync(self) -> None:
        """Recompute the host-side bounds from `positions` (one device read)."""
        if not self.batch_size:
            self.max_position, self.aligned = 0, True
            return
        lo, hi = (int(x) for x in torch.aminmax(self.positions))
        self.max_position, self.aligned = hi, lo == hi

    # -- new caches --------------------------------------------------------------------

    def select(self, index: Tensor) -> KVCache:
        """Rows `index` (reordered, dropped or repeated) as a new cache; source
        positions that no selected row uses are trimmed away."""
        cache = KVCache(
            self_k=[k.index_select(0, index) for k in self.self_k],
            self_v=[v.index_select(0, index) for v in self.self_v],
            cross_k=[k.index_select(0, index) for k in self.cross_k],
            cross_v=[v.index_select(0, index) for v in self.cross_v],
            src_valid=self.src_valid.index_select(0, index),
            positions=self.positions.index_select(0, index),
            src_padded=self.src_padded,
            parked=None if self.parked is None else self.parked.index_select(0, index),
        )
        if cache.parked is not None and not bool(cache.parked.any()):
            cache.parked = None
        cache._sync()
        cache._trim_source()
        return cache

    def _trim_source(self, min_saving: float = 0.0) -> None:
        """Drop trailing source positions no live row uses, if that saves more than
        `min_saving` of them (parked rows keep their first, still valid, positions)."""
        if not (self.src_padded and self.batch_size):
            return
        valid = self.src_valid if self.parked is None else self.src_valid[~self.parked]
        width = self.src_valid.shape[1]
        src_len = int(valid.any(dim=0).nonzero().max()) + 1 if valid.shape[0] else width
        if src_len < width * (1 - min_saving):
            # Copies with the standard strides: `contiguous()` would keep a one-row
            # slice as it is (strides of a size-1 dimension do not count for it), and a
            # compiled decoder compiles again for every new stride.
            def trim(t: Tensor, dim: int) -> Tensor:
                return t.narrow(dim, 0, src_len).clone(memory_format=torch.contiguous_format)

            self.cross_k = [trim(k, 2) for k in self.cross_k]
            self.cross_v = [trim(v, 2) for v in self.cross_v]
            self.src_valid = trim(self.src_valid, 1)
        self.src_padded = not bool(self.src_valid.all())

    @staticmethod
    def concat(caches: list[KVCache]) -> KVCache:
        """Join the rows of several caches (slots and sources right-padded)."""
        caches = [c for c in caches if c.batch_size]
        if not caches:
            raise ValueError("concat needs at least one non-empty cache")
        if len(caches) == 1:
            return caches[0]
        capacity = max(c.capacity for c in caches)
        src_len = max(c.src_valid.shape[1] for c in caches)
        parked = None
        if any(c.parked is not None for c in caches):
            parked = torch.cat([c.parked if c.parked is not None
                                else c.positions.new_zeros(c.batch_size, dtype=torch.bool)
                                for c in caches])
        cache = KVCache(
            self_k=[torch.cat([pad_to(c.self_k[i], 2, capacity) for c in caches])
                    for i in range(len(caches[0].self_k))],
            self_v=[torch.cat([pad_to(c.self_v[i], 2, capacity) for c in caches])
                    for i in range(len(caches[0].self_v))],
            cross_k=[torch.cat([pad_to(c.cross_k[i], 2, src_len) for c in caches])
                     for i in range(len(caches[0].cross_k))],
            cross_v=[torch.cat([pad_to(c.cross_v[i], 2, src_len) for c in caches])
                     for i in range(len(caches[0].cross_v))],
            src_valid=torch.cat([pad_to(c.src_valid, 1, src_len) for c in caches]),
            positions=torch.cat([c.positions for c in caches]),
            parked=parked,
        )
        cache.src_padded = not bool(cache.src_valid.all())
        cache._sync()
        return cache

    # -- rows in place (serving) -------------------------------------------------------

    def free(self, rows: list[int]) -> None:
        """Park `rows`: they keep being computed (at position 0, on stale but finite
        values) until `fill` gives them to new sequences; callers ignore their output."""
        idx = torch.tensor(rows, device=self.positions.device)
        if self.parked is None:
            self.parked = torch.zeros_like(self.positions, dtype=torch.bool)
        self.parked[idx] = True
        self.positions[idx] = 0
        self._sync()
        # A long source gone: stop attending over its width, once that saves a quarter
        # (a copy of the cross keys/values, so not for every token less).
        self._trim_source(min_saving=0.25)

    def fill(self, rows: list[int], new: KVCache) -> None:
        """Put the rows of `new`, a freshly prefilled cache (nothing decoded yet), into
        parked `rows`. Only their cross-attention keys/values are copied: a fresh row's
        self-attention slots are written before they are read."""
        if new.max_position:
            raise ValueError("fill takes freshly prefilled rows only")
        idx = torch.tensor(rows, device=self.positions.device)
        src_len = new.src_valid.shape[1]
        grew = src_len > self.src_valid.shape[1]
        if grew:  # a longer source than any so far: every other row is padded now
            self.cross_k = [pad_to(k, 2, src_len) for k in self.cross_k]
            self.cross_v = [pad_to(v, 2, src_len) for v in self.cross_v]
            self.src_valid = pad_to(self.src_valid, 1, src_len)
        width = self.src_valid.shape[1]
        for mine, theirs in zip(self.cross_k + self.cross_v, new.cross_k + new.cross_v,
                                strict=True):
            mine.index_copy_(0, idx, pad_to(theirs, 2, width))
        self.src_valid.index_copy_(0, idx, pad_to(new.src_valid, 1, width))
        self.src_padded = self.src_padded or grew or width > src_len or new.src_padded
        assert self.parked is not None  # parked rows sit at position 0 already
        self.parked[idx] = False
        if not bool(self.parked.any()):
            self.parked = None
        self._sync()


def pad_to(t: Tensor, dim: int, size: int) -> Tensor:
    """`t` zero-padded at the end of `dim` to `size` (False for bool tensors)."""
    extra = size - t.shape[dim]
    if extra <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t, t.new_zeros(shape)], dim=dim)
