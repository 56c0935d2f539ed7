"""Choosing the next token for a batch of rows whose decoding settings differ.

Per-row settings (temperature, top-k, top-p, minimum length, eos handling) live in
tensors built once when the batch changes, so a decode step is a handful of batched
tensor ops rather than a Python loop over rows. Only seeded sampling and n-gram
blocking touch rows one by one, and only the rows that asked for them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

Strategy = Literal["greedy", "sample", "beam"]
NEG_INF = float("-inf")


@dataclass(frozen=True)
class DecodingParams:
    """How one request is decoded. Validated on construction; errors name the field."""

    strategy: Strategy = "greedy"
    max_new_tokens: int = 128
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1.0 = off
    seed: int | None = None
    beam_size: int = 4
    length_penalty: float = 1.0
    early_stopping: bool = True
    ignore_eos: bool = False  # benchmarks: always generate max_new_tokens
    no_repeat_ngram_size: int = 0  # 0 = off
    num_return_sequences: int = 1  # beam only: the n best hypotheses, up to beam_size
    # Order those n best by the checkpoint's discriminator (model/discriminator.py), not
    # by the beam's score; the output is then the discriminator's favourite.
    rerank: bool = False
    # The sequence log-probability costs a pass over the logits per step (~4% of a
    # batch-64 step); CTranslate2 (`return_scores`) and Hugging Face skip it by default.
    return_logprob: bool = True

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            err = ValueError(f"{name}: {why}")
            err.field = name  # type: ignore[attr-defined]
            return err

        if self.strategy not in ("greedy", "sample", "beam"):
            raise bad("strategy", "must be one of greedy, sample, beam")
        if self.max_new_tokens < 1:
            raise bad("max_new_tokens", "must be >= 1")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise bad("min_new_tokens", "must be between 0 and max_new_tokens")
        if not self.temperature > 0:
            raise bad("temperature", "must be > 0")
        if self.top_k < 0:
            raise bad("top_k", "must be >= 0")
        if not 0 < self.top_p <= 1:
            raise bad("top_p", "must be in (0, 1]")
        if self.strategy == "beam" and not 1 <= self.beam_size <= 16:
            raise bad("beam_size", "must be between 1 and 16")
        if self.no_repeat_ngram_size < 0:
            raise bad("no_repeat_ngram_size", "must be >= 0")
        if self.num_return_sequences < 1:
            raise bad("num_return_sequences", "must be >= 1")
        if self.num_return_sequences > 1 and self.strategy != "beam":
            raise bad("num_return_sequences", "more than 1 needs strategy beam")
        if self.strategy == "beam" and self.num_return_sequences > self.beam_size:
            raise bad("num_return_sequences", "must be at most beam_size")
        if self.rerank and self.num_return_sequences < 2:
            raise bad("rerank", "needs num_return_sequences > 1 (the n-best it reorders)")

    @property
    def rows(self) -> int:
        """Batch rows this request occupies while decoding."""
        return self.beam_size if self.strategy == "beam" else 1


@dataclass
class SamplingBatch:
    """Per-row decoding settings as tensors, kept aligned with the cache's rows."""

    temperature: Tensor  # (batch,) float
    top_k: Tensor  # (batch,) long, 0 = off
    top_p: Tensor  # (batch,) float, 1 = off
    do_sample: Tensor  # (batch,) bool
    min_new_tokens: Tensor  # (batch,) long
    max_new_tokens: Tensor  # (batch,) long
    ignore_eos: Tensor  # (batch,) bool
    no_repeat: list[int]  # per row n-gram size (0 = off)
    generators: list[torch.Generator | None]  # per row, seeded sampling only
    return_logprob: list[bool]  # per row
    # Whether any row needs sampling / eos rules / n-gram blocking: decided once per
    # batch, so a plain greedy step skips those passes without a device sync.
    any_sample: bool = field(init=False)
    any_eos_rule: bool = field(init=False)
    any_no_repeat: bool = field(init=False)
    any_logprob: bool = field(init=False)

    def __post_init__(self) -> None:
        self._flags()

    def _flags(self) -> None:
        self.any_sample = bool(self.do_sample.any())
        self.any_eos_rule = bool(self.ignore_eos.any() or (self.min_new_tokens > 0).any())
        self.any_no_repeat = any(self.no_repeat)
        self.any_logprob = any(self.return_logprob)

    @classmethod
    def from_params(cls, params: list[DecodingParams], device: torch.device) -> SamplingBatch:
        gens: list[torch.Generator | None] = []
        for p in params:
            g = None
            if p.strategy == "sample" and p.seed is not None:
                g = torch.Generator(device=device)
                g.manual_seed(p.seed)
            gens.append(g)
        return cls(
            temperature=torch.tensor([p.temperature for p in params], device=device),
            top_k=torch.tensor([p.top_k for p in params], dtype=torch.long, device=device),
            top_p=torch.tensor([p.top_p for p in params], device=device),
            do_sample=torch.tensor([p.strategy == "sample" for p in params], device=device),
            min_new_tokens=torch.tensor([p.min_new_tokens for p in params], device=device),
            max_new_tokens=torch.tensor([p.max_new_tokens for p in params], device=device),
            ignore_eos=torch.tensor([p.ignore_eos for p in params], device=device),
            no_repeat=[p.no_repeat_ngram_size for p in params],
            generators=gens,
            return_logprob=[p.return_logprob for p in params],
        )

    def select(self, index: Tensor) -> SamplingBatch:
        rows = index.tolist()
        return SamplingBatch(
            temperature=self.temperature[index],
            top_k=self.top_k[index],
            top_p=self.top_p[index],
            do_sample=self.do_sample[index],
            min_new_tokens=self.min_new_tokens[index],
            max_new_tokens=self.max_new_tokens[index],
            ignore_eos=self.ignore_eos[index],
            no_repeat=[self.no_repeat[i] for i in rows],
            generators=[self.generators[i] for i in rows],
            return_logprob=[self.return_logprob[i] for i in rows],
        )

    def park(self, rows: list[int]) -> None:
        """Plain greedy settings for rows whose request ended (a serving engine keeps
        computing them until it reuses them): they no longer switch on sampling, eos
        rules, n-gram blocking or log-probabilities for the whole batch."""
        idx = torch.tensor(rows, device=self.temperature.device)
        self.do_sample[idx] = False
        self.ignore_eos[idx] = False
        self.min_new_tokens[idx] = 0
        for row in rows:
            self.no_repeat[row] = 0
            self.generators[row] = None
            self.return_logprob[row] = False
        self._flags()

    def fill(self, rows: list[int], new: SamplingBatch) -> None:
        """Give rows `rows` the settings of `new`'s rows, in place (a serving engine
        reusing the rows of ended requests)."""
        idx = torch.tensor(rows, device=self.temperature.device)
        for name in ("temperature", "top_k", "top_p", "do_sample", "min_new_tokens",
                     "max_new_tokens", "ignore_eos"):
            getattr(self, name).index_copy_(0, idx, getattr(new, name))
        for i, row in enumerate(rows):
            self.no_repeat[row] = new.no_repeat[i]
            self.generators[row] = new.generators[i]
            self.return_logprob[row] = new.return_logprob[i]
        self._flags()

    @staticmethod
    def concat(batches: list[SamplingBatch]) -> SamplingBatch:
        return SamplingBatch(
            temperature=torch.cat([b.temperature for b in batches]),
            top_k=torch.cat([b.top_k for b in batches]),
            top_p=torch.cat([b.top_p for b in batches]),
            do_sample=torch.cat([b.do_sample for b in batches]),
            min_new_tokens=torch.cat([b.min_new_tokens for b in batches]),
            max_new_tokens=torch.cat([b.max_new_tokens for b in batches]),
            ignore_eos=torch.cat([b.ignore_eos for b in batches]),
            no_repeat=[n for b in batches for n in b.no_repeat],
            generators=[g for b in batches for g in b.generators],
            return_logprob=[r for b in batches for r in b.return_logprob],
        )


def banned_ngram_tokens(history: Tensor, n: int) -> Tensor:
    """Tokens that would repeat an n-gram already in `history` (1-D long tensor)."""
    if n <= 0 or history.numel() < n:
        return history.new_empty(0)
    grams = history.unfold(0, n, 1)  # (num_ngrams, n)
    match = (grams[:, :-1] == history[history.numel() - n + 1 :]).all(dim=1)
    return grams[match, -1]


def constrain(
    logits: Tensor, batch: SamplingBatch, generated: Tensor, n_generated: Tensor, eos_id: int
) -> Tensor:
    """Mask tokens a row may not produce now: eos before min length or when ignored,
    and n-gram repeats. logits: (batch, vocab) float; generated: (batch, steps)."""
    if batch.any_eos_rule:
        block_eos = batch.ignore_eos | (n_generated < batch.min_new_tokens)
        logits[:, eos_id] = logits[:, eos_id].masked_fill(block_eos, NEG_INF)
    if not batch.any_no_repeat:
        return logits
    for row, n in enumerate(batch.no_repeat):
        if n:
            banned = banned_ngram_tokens(generated[row, : int(n_generated[row])], n)
            if banned.numel():
                logits[row, banned] = NEG_INF
    return logits


def warp(logits: Tensor, batch: SamplingBatch) -> Tensor:
    """Temperature, top-k and top-p filtering for the sampling rows."""
    logits = logits / batch.temperature[:, None]
    if bool((batch.top_k > 0).any()):
        vocab = logits.shape[-1]
        k = torch.where(batch.top_k > 0, batch.top_k.clamp(max=vocab), vocab)
        kth = logits.sort(dim=-1, descending=True).values.gather(1, (k - 1)[:, None])
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if bool((batch.top_p < 1).any()):
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already reach top_p (keep at least one).
        drop_sorted = (cum - sorted_logits.softmax(dim=-1)) >= batch.top_p[:, None]
        drop_sorted &= (batch.top_p < 1)[:, None]
        drop = drop_sorted.scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, NEG_INF)
    return logits


@functools.cache
def _argmax_block(vocab: int) -> int:
    """The block size greedy_tokens splits a vocabulary into: a divisor of `vocab` near
    2 * sqrt(vocab) (then both passes are short), or 0 when there is none."""
    sizes = [b for b in range(32, 1025) if vocab % b == 0]
    return min(sizes, key=lambda b: abs(b - 2 * math.sqrt(vocab))) if sizes else 0


def greedy_tokens(logits: Tensor) -> Tensor:
    """`logits.argmax(-1)` of (batch, vocab) logits: the same ties (first index) and NaNs.
    On CPU, argmax over a long last dimension is not vectorised (~1 ms for 64 x 8000, a
    tenth of a batch-64 decode step) while amax is ~20x faster: take the max of each
    block of ids, then the argmax inside the winning block only."""
    vocab = logits.shape[-1]
    block = _argmax_block(vocab)
    if logits.device.type != "cpu" or not block or logits.dim() != 2:
        return logits.argmax(dim=-1)
    blocks = logits.reshape(logits.shape[0], vocab // block, block)
    best = blocks.amax(dim=-1).argmax(dim=-1)
    inner = blocks.gather(1, best[:, None, None].expand(-1, 1, block))[:, 0].argmax(dim=-1)
    return best * block + inner


def choose(logits: Tensor, batch: SamplingBatch) -> tuple[Tensor, Tensor | None]:
    """Next token and its log-probability for each row (None when no row wants it).
    logits: (batch, vocab) float, already constrained. Greedy rows take the argmax;
    sampling rows draw."""
    tokens = greedy_tokens(logits)
    if not batch.any_sample:
        if not batch.any_logprob:
            return tokens, None
        # The argmax's log p = -log sum(exp(logit - max)): two passes over the logits
        # where logsumexp takes four (amax, subtract, exp, sum), ~0.2 ms at 64 x 8000.
        best = logits.gather(1, tokens[:, None])
        return tokens, (logits - best).exp_().sum(dim=-1).log_().neg_()
    sample_rows = batch.do_sample.nonzero().flatten()
    probs = warp(logits[sample_rows], batch.select(sample_rows)).softmax(dim=-1)
    unseeded = [i for i, r in enumerate(sample_rows.tolist()) if batch.generators[r] is None]
    if unseeded:
        idx = torch.tensor(unseeded, device=logits.device)
        tokens[sample_rows[idx]] = torch.multinomial(probs[idx], 1).flatten()
    for i, r in enumerate(sample_rows.tolist()):
        g = batch.generators[r]
        if g is not None:
            tokens[r] = torch.multinomial(probs[i], 1, generator=g)[0]
    if not batch.any_logprob:
        return tokens, None
    # log p(token) = logit - logsumexp: one reduction, no (batch, vocab) log_softmax.
    return tokens, logits.gather(1, tokens[:, None])[:, 0] - logits.logsumexp(dim=-1)
