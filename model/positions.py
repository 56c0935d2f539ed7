"""Where a token sits: absolute position embeddings added to the token embeddings, or
T5's relative attention bias added to attention scores. One object per model side is
chosen from `SoraConfig.positions` at construction; nothing branches per token.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from model.config import SoraConfig


def sinusoidal_table(n_positions: int, dim: int) -> Tensor:
    """(n_positions, dim) fixed positional encodings (Vaswani et al.), sin and cos
    interleaved: Sora's own layout."""
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_positions, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table


def halves_table(n_positions: int, dim: int, fairseq: bool) -> Tensor:
    """sin in the first half of each row, cos in the second (even `dim`, which the config
    checks), with Marian's frequencies 10000^(-2i/dim) (in float64, as Marian computes
    them) or fairseq/M2M100's 10000^(-i/(dim/2 - 1)) (in float32, as M2M100 does)."""
    half = dim // 2
    if fairseq:
        freq = torch.exp(torch.arange(half).float() * -(math.log(10000) / (half - 1)))
        angle = torch.arange(n_positions).float()[:, None] * freq[None, :]
    else:
        i = torch.arange(half, dtype=torch.float64)
        freq = torch.exp(-math.log(10000.0) * 2 * i / dim)
        angle = torch.arange(n_positions, dtype=torch.float64)[:, None] * freq[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=1).float()


class FixedPositions(nn.Module):
    """A fixed table added to the token embeddings (a non-persistent buffer: nothing to
    save). The offset is applied once, here, by dropping the table's first rows."""

    table: Tensor

    def __init__(self, table: Tensor, offset: int) -> None:
        super().__init__()
        self.register_buffer("table", table[offset:], persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        return self.table[positions]


class LearnedPositions(nn.Module):
    """A learned table of one side (BART), read `offset` rows further on."""

    def __init__(self, n_positions: int, dim: int, offset: int) -> None:
        super().__init__()
        self.offset = offset
        self.weight = nn.Parameter(torch.randn(n_positions + offset, dim) * 0.02)

    def forward(self, positions: Tensor) -> Tensor:
        return self.weight[positions + self.offset]


class NoPositions(nn.Module):
    """Relative attention bias: the embeddings carry no position."""

    def forward(self, positions: Tensor) -> Tensor:
        return positions.new_zeros(())


def absolute_positions(config: SoraConfig) -> tuple[nn.Module, nn.Module]:
    """(source, target) position embeddings for `config.positions`."""
    n = max(config.max_source_positions, config.max_target_positions)
    offset = config.position_offset
    kind = config.positions
    if kind == "learned":
        return (LearnedPositions(config.max_source_positions, config.d_model, offset),
                LearnedPositions(config.max_target_positions, config.d_model, offset))
    if kind == "relative":
        return NoPositions(), NoPositions()
    if kind == "sinusoidal":
        table = sinusoidal_table(n + offset, config.d_model)
    else:
        table = halves_table(n + offset, config.d_model, fairseq=kind == "sinusoidal-fairseq")
    shared = FixedPositions(table, offset)
    return shared, shared


def relative_bucket(relative: Tensor, bidirectional: bool, buckets: int, max_distance: int
                    ) -> Tensor:
    """T5's bucket of each (key - query) distance: exact buckets for small distances,
    logarithmic ones up to max_distance, one bucket beyond it."""
    bucket = torch.zeros_like(relative)
    if bidirectional:
        buckets //= 2
        bucket = (relative > 0).long() * buckets
        relative = relative.abs()
    else:
        relative = -torch.clamp(relative, max=0)
    exact = buckets // 2
    large = exact + (
        torch.log(relative.float() / exact) / math.log(max_distance / exact) * (buckets - exact)
    ).long()
    large = torch.clamp(large, max=buckets - 1)
    return bucket + torch.where(relative < exact, relative, large)


class RelativeBias(nn.Module):
    """T5's learned (buckets, heads) attention bias of one stack, shared by its layers.
    The decoder's causal mask and the source padding are folded in as -inf, so attention
    takes one float mask."""

    def __init__(self, config: SoraConfig, bidirectional: bool) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        self.buckets = config.relative_buckets
        self.max_distance = config.relative_max_distance
        self.embedding = nn.Embedding(config.relative_buckets, config.n_heads)

    def bias(self, relative: Tensor) -> Tensor:
        """relative (..., q, k) key minus query positions -> (..., heads, q, k)."""
        b = relative_bucket(relative, self.bidirectional, self.buckets, self.max_distance)
        return self.embedding(b).movedim(-1, -3)

    def full(self, q_len: int, k_len: int, allowed: Tensor | None) -> Tensor:
        """(1 or batch, heads, q_len, k_len) bias for whole sequences; `allowed` is a
        boolean mask broadcastable to it (True = may attend) or None."""
        device = self.embedding.weight.device
        keys, queries = torch.arange(k_len, device=device), torch.arange(q_len, device=device)
        rel = keys[None, :] - queries[:, None]
        bias = self.bias(rel)[None]
        if allowed is not None:
            bias = bias.masked_fill(~allowed, float("-inf"))
        return bias

    def step(self, positions: Tensor, span: int, allowed: Tensor | None) -> Tensor:
        """(batch, heads, 1, span) bias for each row's one new query at `positions`
        (batch,) against slots 0..span-1."""
        slots = torch.arange(span, device=positions.device)
        bias = self.bias((slots[None, :] - positions[:, None])[:, None, :])  # (b, h, 1, span)
        if allowed is not None:
            bias = bias.masked_fill(~allowed, float("-inf"))
        return bias
