"""Greedy, sampling and beam-search generation over `Sora.decode_step` with a KV cache.

`generate` decodes a batch of sources with one set of settings; rows finish on their
own (eos or length) and leave the batch, so short outputs do not pay for long ones.
The serving engine reuses the same pieces (`sampling`, `BeamSearch`) with per-request
settings in one shared batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from model.discriminator import Discriminator, rerank
from model.sampling import DecodingParams, SamplingBatch, choose, constrain
from model.sora import Sora
from model.tokenizer import SoraTokenizer


@dataclass
class GenerationResult:
    token_ids: list[int]
    text: str
    logprob: float | None  # sum of the chosen tokens' log-probabilities (if asked for)
    finish_reason: str  # "eos" | "length"


def pad_batch(sequences: list[list[int]], pad_id: int, device: torch.device) -> Tensor:
    """Right-pad token lists into a (batch, max_len) long tensor."""
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out.to(device)


@dataclass
class Hypothesis:
    tokens: list[int]
    logprob: float
    score: float
    finish_reason: str

    @property
    def output(self) -> list[int]:
        """The output's token ids: `tokens` without a closing eos."""
        return self.tokens[:-1] if self.finish_reason == "eos" else self.tokens


@dataclass
class BeamSearch:
    """Beam search for one source occupying `beam_size` consecutive batch rows."""

    params: DecodingParams
    eos_id: int
    beams: list[list[int]] = field(default_factory=list)
    scores: Tensor | None = None  # (beam,) running log-probabilities
    finished: list[Hypothesis] = field(default_factory=list)
    done: bool = False

    def __post_init__(self) -> None:
        k = self.params.beam_size
        self.beams = [[] for _ in range(k)]
        # Only the first beam is live at the start, so the k copies do not tie.
        self.scores = torch.full((k,), float("-inf"))
        self.scores[0] = 0.0

    def _final_score(self, logprob: float, length: int) -> float:
        return logprob / max(length, 1) ** self.params.length_penalty

    def step(self, logprobs: Tensor) -> tuple[list[int], list[int]]:
        """logprobs: (beam, vocab) constrained log-probabilities for this step.
        Returns (parent beam, token) for each of the next step's beams."""
        k = self.params.beam_size
        assert self.scores is not None
        step = len(self.beams[0]) + 1
        total = (self.scores.to(logprobs.device)[:, None] + logprobs.float()).flatten()
        top_scores, top_idx = total.topk(min(2 * k, total.numel()))
        vocab = logprobs.shape[1]
        parents: list[int] = []
        tokens: list[int] = []
        new_scores: list[float] = []
        for rank, (score, idx) in enumerate(zip(top_scores.tolist(), top_idx.tolist(),
                                                strict=True)):
            if score == float("-inf"):
                break
            parent, token = divmod(idx, vocab)
            seq = [*self.beams[parent], token]
            if rank >= k and (token == self.eos_id or step >= self.params.max_new_tokens):
                # Only the k best candidates may finish (as in fairseq and transformers);
                # the rest are there to keep k beams alive.
                continue
            if token == self.eos_id and not self.params.ignore_eos:
                self.finished.append(
                    Hypothesis(seq, score, self._final_score(score, len(seq)), "eos")
                )
                continue
            if step >= self.params.max_new_tokens:
                self.finished.append(
                    Hypothesis(seq, score, self._final_score(score, len(seq)), "length")
                )
                continue
            parents.append(parent)
            tokens.append(token)
            new_scores.append(score)
            if len(parents) == k:
                break
        if not parents:
            self.done = True
            return [0] * k, [self.eos_id] * k
        best_live = new_scores[0]
        if len(self.finished) >= k:
            best_done = max(h.score for h in self.finished)
            # With early stopping, k finished hypotheses end the search; otherwise stop
            # once no live beam can still beat the best finished one.
            if self.params.early_stopping or best_done >= self._final_score(
                best_live, self.params.max_new_tokens
            ):
                self.done = True
        # Pad to k rows so the group keeps its shape; padded beams are dead (-inf).
        while len(parents) < k:
            parents.append(parents[0])
            tokens.append(tokens[0])
            new_scores.append(float("-inf"))
        self.beams = [[*self.beams[p], t] for p, t in zip(parents, tokens, strict=True)]
        self.scores = torch.tensor(new_scores)
        return parents, tokens

    def best(self) -> Hypothesis:
        return self.nbest(1)[0]

    def nbest(self, n: int) -> list[Hypothesis]:
        """The `n` best distinct hypotheses, best first: finished ones, then (when too
        few finished) the live beams as they stand."""
        ranked = sorted(self.finished, key=lambda h: h.score, reverse=True)
        if len(ranked) < n and self.scores is not None:
            for beam, s in zip(self.beams, self.scores.tolist(), strict=True):
                if s != float("-inf"):
                    ranked.append(Hypothesis(beam, s, self._final_score(s, len(beam)), "length"))
        out: list[Hypothesis] = []
        seen: set[tuple[int, ...]] = set()
        for h in ranked:
            key = tuple(h.tokens)
            if key not in seen:
                seen.add(key)
                out.append(h)
            if len(out) == n:
                break
        return out


def force_tokens(logits: Tensor, forced: Tensor) -> Tensor:
    """Logits (rows, vocab) with each row's forced token (forced: (rows,), -1 for none)
    the only choice, at log-probability 0: what transformers' forced_bos_token_id does at
    the first step (NLLB/M2M100's target language code), and forced_eos_token_id at the
    last (`force_eos`)."""
    rows = (forced >= 0).nonzero().flatten()
    if not rows.numel():
        return logits
    logits = logits.clone()
    logits[rows] = float("-inf")
    logits[rows, forced[rows]] = 0.0
    return logits


def force_eos(logits: Tensor, at_limit: Tensor, eos_id: int) -> Tensor:
    """Rows at their last allowed step (at_limit: (rows,) bool) can only produce eos, so
    an output cut off by max_new_tokens still ends (config.forced_eos: BART-large-cnn)."""
    return force_tokens(logits, torch.where(at_limit, eos_id, -1))


def decoder_start(bos_id: int, n: int, device: torch.device, forced: Tensor | None,
                  forced_start: bool) -> tuple[Tensor, Tensor | None]:
    """(rows,) the token each row's decoder starts from, and the (rows,) tokens still to
    force at the first step. Usually bos, and `forced` as it is; with `forced_start`
    (mBART-cc25) a row's forced token is its start token instead, and none is forced."""
    tokens = torch.full((n,), bos_id, dtype=torch.long, device=device)
    if forced is None or not forced_start:
        return tokens, forced
    return torch.where(forced >= 0, forced, tokens), None


def _forced(forced: list[list[int]] | None, device: torch.device) -> Tensor | None:
    """(rows,) each row's forced first token or -1; None when no row has one."""
    if not forced or not any(forced):
        return None
    if any(len(f) > 1 for f in forced):
        raise ValueError("at most one forced first token per source")
    return torch.tensor([f[0] if f else -1 for f in forced], device=device)


@torch.inference_mode()
def generate(
    model: Sora,
    tokenizer: SoraTokenizer,
    sources: list[list[int]],
    params: DecodingParams,
    forced: list[list[int]] | None = None,
    discriminator: Discriminator | None = None,
) -> list[GenerationResult]:
    """Decode every source (already tokenized, with task prefix and eos). `forced[i]`:
    the token source i's output must start with (`SoraTokenizer.forced_ids`), if any, or
    its decoder's start token where the prompting says so (`Prompting.forced_start`).
    params.rerank: each output is the `discriminator`'s favourite of the beam's n best."""
    if not sources:
        return []
    if params.rerank and discriminator is None:
        raise ValueError("rerank: needs a discriminator")
    if params.strategy == "beam":
        return [_beam(model, tokenizer, src, params, forced[i] if forced else [],
                      discriminator) for i, src in enumerate(sources)]
    forced_start = tokenizer.prompting.forced_start
    device = model.embed.weight.device
    cfg = model.config
    n = len(sources)
    cache = model.prefill(pad_batch(sources, cfg.pad_id, device), capacity=params.max_new_tokens)
    sampling = SamplingBatch.from_params([params] * n, device)
    rows = torch.arange(n, device=device)  # original index of each live row
    generated = torch.full((n, params.max_new_tokens), cfg.pad_id, dtype=torch.long, device=device)
    logprob = torch.zeros(n, device=device)
    n_gen = torch.zeros(n, dtype=torch.long, device=device)
    out_len = [0] * n
    reason = ["length"] * n
    out_tokens = torch.full_like(generated, cfg.pad_id)
    out_logprob = torch.zeros(n, device=device)
    tokens, first = decoder_start(cfg.bos_id, n, device, _forced(forced, device), forced_start)
    # Every row started together, so all have generated `step` tokens: writes go to one
    # column and the length limit is a host-side check, with no per-row bookkeeping.
    step = 0
    while rows.numel():
        logits = model.decode_step(tokens, cache).float()
        logits = constrain(logits, sampling, generated, n_gen, cfg.eos_id)
        if step == 0 and first is not None:
            logits = force_tokens(logits, first)
        if cfg.forced_eos and step == params.max_new_tokens - 1:
            logits = force_eos(logits, ~sampling.ignore_eos, cfg.eos_id)
        tokens, lp = choose(logits, sampling)
        generated[:, step] = tokens
        if lp is not None:
            logprob += lp
        n_gen += 1
        step += 1
        if params.ignore_eos:
            is_eos = torch.zeros_like(tokens, dtype=torch.bool)
        else:
            is_eos = tokens == cfg.eos_id
        if step >= params.max_new_tokens:
            done = torch.ones_like(is_eos)
        elif bool(is_eos.any()):
            done = is_eos
        else:
            continue
        for i in done.nonzero().flatten().tolist():
            r = int(rows[i])
            out_tokens[r] = generated[i]
            out_len[r] = step - int(is_eos[i])
            out_logprob[r] = logprob[i]
            reason[r] = "eos" if bool(is_eos[i]) else "length"
        keep = (~done).nonzero().flatten()
        if not keep.numel():
            break
        rows, tokens, generated = rows[keep], tokens[keep], generated[keep]
        logprob, n_gen = logprob[keep], n_gen[keep]
        sampling = sampling.select(keep)
        cache = cache.select(keep)
    token_lists = [out_tokens[r, : out_len[r]].tolist() for r in range(n)]
    texts = tokenizer.decode_batch(token_lists)
    return [
        GenerationResult(t, text, float(out_logprob[r]) if params.return_logprob else None,
                         reason[r])
        for r, (t, text) in enumerate(zip(token_lists, texts, strict=True))
    ]


def beam_nbest(
    model: Sora, source: list[int], params: DecodingParams, forced: list[int] | None = None,
    forced_start: bool = False,
) -> list[Hypothesis]:
    """Beam search for one source: its params.num_return_sequences best hypotheses,
    best first; `forced`: the token every hypothesis starts with, if any (with
    `forced_start`: the token the decoder starts from)."""
    device = model.embed.weight.device
    cfg = model.config
    k = params.beam_size
    src = pad_batch([source], cfg.pad_id, device)
    cache = model.prefill(src, capacity=params.max_new_tokens).select(
        torch.zeros(k, dtype=torch.long, device=device)
    )
    sampling = SamplingBatch.from_params([params] * k, device)
    search = BeamSearch(params, cfg.eos_id)
    generated = torch.full((k, params.max_new_tokens), cfg.pad_id, dtype=torch.long, device=device)
    n_gen = torch.zeros(k, dtype=torch.long, device=device)
    tokens, first = decoder_start(cfg.bos_id, k, device, _forced([forced or []] * k, device),
                                  forced_start)
    while not search.done:
        logits = model.decode_step(tokens, cache).float()
        logits = constrain(logits, sampling, generated, n_gen, cfg.eos_id)
        if first is not None and not search.beams[0]:
            logits = force_tokens(logits, first)
        if cfg.forced_eos and len(search.beams[0]) == params.max_new_tokens - 1:
            # As transformers applies it to beam scores: every beam can only end.
            logits = force_eos(logits, ~sampling.ignore_eos, cfg.eos_id)
        parents, next_tokens = search.step(logits.log_softmax(dim=-1))
        if search.done:
            break
        index = torch.tensor(parents, device=device)
        cache = cache.select(index)
        generated = generated[index]
        generated[:, int(n_gen[0])] = torch.tensor(next_tokens, device=device)
        n_gen += 1
        tokens = torch.tensor(next_tokens, device=device)
    return search.nbest(params.num_return_sequences)


def _beam(
    model: Sora, tokenizer: SoraTokenizer, source: list[int], params: DecodingParams,
    forced: list[int], discriminator: Discriminator | None,
) -> GenerationResult:
    hyps = beam_nbest(model, source, params, forced, tokenizer.prompting.forced_start)
    outputs = [h.output for h in hyps]
    pick = 0
    if params.rerank and discriminator is not None:
        pick = rerank(discriminator, tokenizer, source, outputs)[0][0]
    best, ids = hyps[pick], outputs[pick]
    logprob = best.logprob if params.return_logprob else None
    return GenerationResult(ids, tokenizer.decode(ids), logprob, best.finish_reason)
