"""Transformer building blocks: attention, feed-forward, encoder and decoder layers.

The norm, its place around each block and the feed-forward come from `model.variants`
(chosen once at construction). Attention runs through `scaled_dot_product_attention`;
a mask is boolean (True where a key may be attended to) or, with T5's relative
positions, a float bias with -inf where a key may not be attended to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.cache import KVCache
from model.config import SoraConfig
from model.variants import RESIDUALS, make_feed_forward, make_norm


def split_heads(x: Tensor, n_heads: int) -> Tensor:
    # (batch, len, d_model) -> (batch, heads, len, head_dim)
    b, t, d = x.shape
    return x.view(b, t, n_heads, d // n_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    # (batch, heads, len, head_dim) -> (batch, len, d_model)
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)


# Attention for one query per row: q (batch, heads, 1, head_dim) against k/v (batch,
# heads, keys, head_dim) with an optional boolean mask (True = may attend).
Attend = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]


def fused_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """The fused kernel: the faster one for eager decode steps."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def matmul_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """Two matrix products around a softmax: what a compiled decoder wants. At one query
    per row inductor writes both products, the cache write, scale, mask and softmax as
    one C++ kernel of its own, which beats the fused kernel's loop over (row, head)
    pairs: a compiled batch-64 step ran ~1.25x faster with this than with
    `fused_attention` on CPU. Eager, the separate passes make it the slower one."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask
    return torch.matmul(scores.softmax(dim=-1), v)


def onednn_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """F.linear through oneDNN (`Sora.use_onednn`): bias added inside the kernel.
    `weight`: (out, in), or `PackedLinear`'s packed copy of it."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


# oneDNN lays a packed weight out for this many rows (the engine's default batch); any
# other row count reads it too.
PACK_ROWS = 64


class PackedLinear:
    """`onednn_linear` on a copy of the weight packed once in oneDNN's blocked layout,
    so that no call repacks it: greedy decoding of the OPUS-MT base shape ran 1.09x at
    64 rows, 1.21x at 16, 1.24x at 8 and 1.27x at 4 on this project's AMD CPU, but 0.83x
    at one row, which therefore reads the weight as it is. The copy costs the weight's
    memory again; it is made anew when the weight changes (in place, or replaced) and is
    not deep-copied (a copied model packs its own)."""

    def __init__(self) -> None:
        self.packed: Tensor | None = None
        self.key: tuple[int, int] | None = None

    def __call__(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if x.numel() == x.shape[-1]:  # one row
            return onednn_linear(x, weight, bias)
        key = (weight.data_ptr(), weight._version)
        if key != self.key:
            self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACK_ROWS)
            self.key = key
        return onednn_linear(x, self.packed, bias)

    def __deepcopy__(self, memo: dict[int, object]) -> PackedLinear:
        return PackedLinear()


class OneDNNLinear(nn.Linear):
    """nn.Linear through `PackedLinear` (`Sora.use_onednn` swaps it in and sets
    `onednn`; the weights and state dict stay nn.Linear's), F.linear where torch.compile
    traces it: oneDNN's op does not compile at dynamic batch sizes."""

    onednn: PackedLinear

    def forward(self, x: Tensor) -> Tensor:
        if torch.compiler.is_compiling():
            return F.linear(x, self.weight, self.bias)
        return self.onednn(x, self.weight, self.bias)


@dataclass(frozen=True)
class Packing:
    """Where the real tokens of a right-padded (batch, length) batch are, so layers can
    run on real tokens only and attention on the padded layout. Both directions are
    index_select (fast on CPU; index_copy is not)."""

    index: Tensor  # (n_real,) flat position of each real token
    rows: Tensor  # (batch * length,) packed row of each position; n_real means zeros
    batch: int
    length: int

    @classmethod
    def of(cls, valid: Tensor) -> Packing:
        flat = valid.flatten()
        index = flat.nonzero().flatten()
        rows = torch.full_like(flat, index.numel(), dtype=torch.long)
        rows[index] = torch.arange(index.numel(), device=valid.device)
        return cls(index, rows, valid.shape[0], valid.shape[1])

    def pack(self, x: Tensor) -> Tensor:
        """(batch, length, dim) -> (n_real, dim)"""
        return x.reshape(self.batch * self.length, -1).index_select(0, self.index)

    def unpack(self, x: Tensor) -> Tensor:
        """(n_real, dim) -> (batch, length, dim), zeros at padded positions."""
        padded = torch.cat([x, x.new_zeros(1, x.shape[-1])]).index_select(0, self.rows)
        return padded.view(self.batch, self.length, -1)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection."""

    def __init__(self, config: SoraConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        inner = config.attention_dim
        self.qkv = nn.Linear(config.d_model, 3 * inner, bias=config.linear_bias)
        self.out = nn.Linear(inner, config.d_model, bias=config.linear_bias)

    def forward(self, x: Tensor, mask: Tensor | None, causal: bool = False) -> Tensor:
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, dim=-1))
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=drop, is_causal=causal and mask is None
        )
        return self.out(merge_heads(y))

    def forward_packed(self, x: Tensor, packing: Packing, mask: Tensor) -> Tensor:
        """forward() on real tokens only, x: (n_real, d_model). The projections skip the
        padding; only attention itself runs on the padded layout."""
        qkv = packing.unpack(self.qkv(x))
        q, k, v = (split_heads(u, self.n_heads) for u in qkv.chunk(3, dim=-1))
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return self.out(packing.pack(merge_heads(y)))

    def step(
        self, x: Tensor, cache: KVCache, layer: int, mask: Tensor | None, attend: Attend
    ) -> Tensor:
        """One new token per row: write its key/value at the row's slot, attend to the
        row's slots so far. x: (batch, 1, d_model). With one position, (batch, 1, heads,
        head_dim) and (batch, heads, 1, head_dim) share a memory order, so heads split
        and merge by view alone: fewer ops per step, which is what batch-1 decoding pays for."""
        b = x.shape[0]
        h = self.n_heads
        # (batch, 1, 3 * d_model) -> q, k, v each (batch, heads, 1, head_dim)
        q, k, v = self.qkv(x).view(b, 3, h, 1, -1).unbind(1)
        keys, values = cache.write(layer, k, v)
        y = attend(q, keys, values, mask)
        return self.out(y.reshape(b, 1, -1))


class CrossAttention(nn.Module):
    """Decoder-to-encoder attention; keys/values are projected once per source."""

    def __init__(self, config: SoraConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        inner = config.attention_dim
        self.q = nn.Linear(config.d_model, inner, bias=config.linear_bias)
        self.kv = nn.Linear(config.d_model, 2 * inner, bias=config.linear_bias)
        self.out = nn.Linear(inner, config.d_model, bias=config.linear_bias)

    def project_memory(
        self, memory: Tensor, packing: Packing | None = None
    ) -> tuple[Tensor, Tensor]:
        """Keys and values (batch, heads, src_len, head_dim) of memory (batch, src_len,
        d_model), or of its real tokens (n_real, d_model) laid out by `packing`: zeros
        at padding, which the cross-attention mask hides."""
        kv = self.kv(memory)
        if packing is not None:
            kv = packing.unpack(kv)
        k, v = (split_heads(t, self.n_heads) for t in kv.chunk(2, dim=-1))
        return k, v

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        q = split_heads(self.q(x), self.n_heads)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return self.out(merge_heads(y))

    def step(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, attend: Attend) -> Tensor:
        """forward() for one position per row (see SelfAttention.step on the views)."""
        b = x.shape[0]
        q = self.q(x).view(b, self.n_heads, 1, -1)
        y = attend(q, k, v, mask)
        return self.out(y.reshape(b, 1, -1))


class EncoderLayer(nn.Module):
    def __init__(self, config: SoraConfig) -> None:
        super().__init__()
        self.residual = RESIDUALS[config.norm_placement]
        self.norm1 = make_norm(config)
        self.attn = SelfAttention(config)
        self.norm2 = make_norm(config)
        self.ffn = make_feed_forward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = self.residual(x, self.norm1, lambda h: self.dropout(self.attn(h, mask)))
        return self.residual(x, self.norm2, lambda h: self.dropout(self.ffn(h)))

    def forward_packed(self, x: Tensor, packing: Packing, mask: Tensor) -> Tensor:
        """forward() on the real tokens only (see SelfAttention.forward_packed)."""
        x = self.residual(
            x, self.norm1, lambda h: self.dropout(self.attn.forward_packed(h, packing, mask))
        )
        return self.residual(x, self.norm2, lambda h: self.dropout(self.ffn(h)))


class DecoderLayer(nn.Module):
    def __init__(self, config: SoraConfig) -> None:
        super().__init__()
        self.residual = RESIDUALS[config.norm_placement]
        self.norm1 = make_norm(config)
        self.self_attn = SelfAttention(config)
        self.norm2 = make_norm(config)
        self.cross_attn = CrossAttention(config)
        self.norm3 = make_norm(config)
        self.ffn = make_feed_forward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, x: Tensor, memory: Tensor, self_mask: Tensor | None, cross_mask: Tensor | None
    ) -> Tensor:
        """Teacher-forced pass over whole target sequences (training, scoring)."""
        drop = self.dropout
        x = self.residual(x, self.norm1, lambda h: drop(self.self_attn(h, self_mask, causal=True)))
        k, v = self.cross_attn.project_memory(memory)
        x = self.residual(x, self.norm2, lambda h: drop(self.cross_attn(h, k, v, cross_mask)))
        return self.residual(x, self.norm3, lambda h: drop(self.ffn(h)))

    def step(
        self, x: Tensor, cache: KVCache, layer: int, self_mask: Tensor | None, attend: Attend
    ) -> Tensor:
        """Incremental pass for one token per row. x: (batch, 1, d_model); self_mask is
        this step's (see `Sora._decode`)."""
        x = self.residual(
            x, self.norm1, lambda h: self.self_attn.step(h, cache, layer, self_mask, attend)
        )
        x = self.residual(x, self.norm2, lambda h: self.cross_attn.step(
            h, cache.cross_k[layer], cache.cross_v[layer], cache.cross_mask(), attend))
        return self.residual(x, self.norm3, self.ffn)
