"""The decoder's KV cache, shaped for continuous batching.

Self-attention keys/values live in preallocated buffers that all rows fill at the same
slot each step, so a step writes in place instead of copying the cache. Rows that join
later are left-padded (their empty slots masked out), and cross-attention keys/values
of sources of different lengths are right-padded. Rows can be selected (beam reorder,
dropping finished requests) and caches concatenated (admitting new requests).
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
    # (batch, capacity) bool: slot holds a real key of that row (False = left padding).
    self_valid: Tensor
    # Slots filled so far; the same for every row.
    length: int
    # Cross-attention, projected once per source: (batch, heads, src_len, head_dim).
    cross_k: list[Tensor]
    cross_v: list[Tensor]
    # (batch, src_len) bool: source position is a real token (False = right padding).
    src_valid: Tensor
    # (batch,) long: decoder position of each row's next token.
    positions: Tensor
    # Whether any slot/source position is padding; lets attention skip the mask.
    self_padded: bool = False
    src_padded: bool = False
    # Largest entry of `positions`, kept on the host so a step needs no device sync.
    max_position: int = 0

    @property
    def batch_size(self) -> int:
        return int(self.positions.shape[0])

    @property
    def capacity(self) -> int:
        return int(self.self_valid.shape[1])

    def self_mask(self, upto: int) -> Tensor | None:
        """(batch, 1, 1, upto) attention mask over slots, or None when nothing is padded."""
        if not self.self_padded:
            return None
        return self.self_valid[:, None, None, :upto]

    def cross_mask(self) -> Tensor | None:
        if not self.src_padded:
            return None
        return self.src_valid[:, None, None, :]

    def reserve(self, slots: int = 1) -> None:
        """Make room for `slots` more steps, doubling capacity so growth is amortised."""
        need = self.length + slots
        if need <= self.capacity:
            return
        new_cap = max(need, 2 * self.capacity)
        extra = new_cap - self.capacity
        b, h, _, d = self.self_k[0].shape
        like = self.self_k[0]
        pad = like.new_zeros(b, h, extra, d)
        self.self_k = [torch.cat([k, pad], dim=2) for k in self.self_k]
        self.self_v = [torch.cat([v, pad], dim=2) for v in self.self_v]
        self.self_valid = torch.cat(
            [self.self_valid, self.self_valid.new_zeros(b, extra)], dim=1
        )

    def begin_step(self) -> int:
        """Claim the next slot for every row; layers write their keys/values there."""
        self.reserve(1)
        self.self_valid[:, self.length] = True
        return self.length

    def end_step(self) -> None:
        self.length += 1
        self.positions += 1
        self.max_position += 1

    def select(self, index: Tensor) -> KVCache:
        """Rows `index` (reordered, dropped or repeated) as a new cache."""
        valid = self.self_valid.index_select(0, index)
        src_valid = self.src_valid.index_select(0, index)
        positions = self.positions.index_select(0, index)
        cache = KVCache(
            self_k=[k.index_select(0, index) for k in self.self_k],
            self_v=[v.index_select(0, index) for v in self.self_v],
            self_valid=valid,
            length=self.length,
            cross_k=[k.index_select(0, index) for k in self.cross_k],
            cross_v=[v.index_select(0, index) for v in self.cross_v],
            src_valid=src_valid,
            positions=positions,
            self_padded=self.self_padded,
            src_padded=self.src_padded,
            max_position=int(positions.max()) if positions.numel() else 0,
        )
        cache.compact()
        return cache

    def compact(self) -> None:
        """Drop leading slots and trailing source positions that no row uses any more."""
        if self.batch_size == 0:
            return
        if self.self_padded and self.length:
            used = self.self_valid[:, : self.length].any(dim=0)
            first = int(used.to(torch.int8).argmax()) if bool(used.any()) else self.length
            if first:
                self.self_k = [k[:, :, first:].contiguous() for k in self.self_k]
                self.self_v = [v[:, :, first:].contiguous() for v in self.self_v]
                self.self_valid = self.self_valid[:, first:].contiguous()
                self.length -= first
            self.self_padded = not bool(self.self_valid[:, : self.length].all())
        if self.src_padded:
            used_src = self.src_valid.any(dim=0)
            src_len = int(used_src.nonzero().max()) + 1
            if src_len < self.src_valid.shape[1]:
                self.cross_k = [k[:, :, :src_len].contiguous() for k in self.cross_k]
                self.cross_v = [v[:, :, :src_len].contiguous() for v in self.cross_v]
                self.src_valid = self.src_valid[:, :src_len].contiguous()
            self.src_padded = not bool(self.src_valid.all())

    @staticmethod
    def concat(caches: list[KVCache]) -> KVCache:
        """Join the rows of several caches: self slots left-padded, sources right-padded."""
        caches = [c for c in caches if c.batch_size]
        if not caches:
            raise ValueError("concat needs at least one non-empty cache")
        if len(caches) == 1:
            return caches[0]
        length = max(c.length for c in caches)
        capacity = max(max(c.capacity for c in caches), length + 1)
        src_len = max(c.src_valid.shape[1] for c in caches)
        n_layers = len(caches[0].self_k)

        def pad_self(c: KVCache, t: Tensor) -> Tensor:
            # (b, h, cap, d) -> (b, h, capacity, d) with the filled slots ending at `length`.
            b, h, _, d = t.shape
            out = t.new_zeros(b, h, capacity, d)
            out[:, :, length - c.length : length] = t[:, :, : c.length]
            return out

        def pad_src(t: Tensor) -> Tensor:
            # (b, h, s, d) -> (b, h, src_len, d), right padding.
            extra = src_len - t.shape[2]
            if not extra:
                return t
            return torch.cat([t, t.new_zeros(t.shape[0], t.shape[1], extra, t.shape[3])], 2)

        valid = []
        src_valid = []
        for c in caches:
            v = c.self_valid.new_zeros(c.batch_size, capacity)
            v[:, length - c.length : length] = c.self_valid[:, : c.length]
            valid.append(v)
            sv = c.src_valid
            if sv.shape[1] < src_len:
                sv = torch.cat([sv, sv.new_zeros(sv.shape[0], src_len - sv.shape[1])], 1)
            src_valid.append(sv)
        all_valid = torch.cat(valid)
        all_src_valid = torch.cat(src_valid)
        return KVCache(
            self_k=[torch.cat([pad_self(c, c.self_k[i]) for c in caches]) for i in range(n_layers)],
            self_v=[torch.cat([pad_self(c, c.self_v[i]) for c in caches]) for i in range(n_layers)],
            self_valid=all_valid,
            length=length,
            cross_k=[torch.cat([pad_src(c.cross_k[i]) for c in caches]) for i in range(n_layers)],
            cross_v=[torch.cat([pad_src(c.cross_v[i]) for c in caches]) for i in range(n_layers)],
            src_valid=all_src_valid,
            positions=torch.cat([c.positions for c in caches]),
            self_padded=not bool(all_valid[:, :length].all()),
            src_padded=not bool(all_src_valid.all()),
            max_position=max(c.max_position for c in caches),
        )
