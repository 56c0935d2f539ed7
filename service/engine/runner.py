"""Runs the model for the engine: prefill newly admitted sequences, then one decode step
for the whole running batch. Tensors only; lifecycle bookkeeping is the engine's."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from model.generation import BeamSearch, decoder_start, force_eos, force_tokens, pad_batch
from model.sampling import SamplingBatch, choose, constrain
from model.sora import Sora
from model.tokenizer import IncrementalDetokenizer, SoraTokenizer
from service.engine.batch import RunningBatch
from service.engine.request import Sequence


@dataclass
class StepOutput:
    tokens: list[int]  # (rows,) chosen token per row
    done: Tensor  # (rows,) bool: the row's sequence finished this step (non-beam rows)
    eos: Tensor  # (rows,) bool: finished by eos rather than length
    bad: Tensor  # (rows,) bool: non-finite logits


class ModelRunner:
    def __init__(self, model: Sora, tokenizer: SoraTokenizer) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = model.embed.weight.device
        self.eos_id = model.config.eos_id

    @torch.inference_mode()
    def prefill(self, seqs: list[Sequence]) -> RunningBatch:
        """Encode the sources together and build their rows (beam sequences get k)."""
        cfg = self.model.config
        src = pad_batch([s.source_ids for s in seqs], cfg.pad_id, self.device)
        width = max(s.params.max_new_tokens for s in seqs)
        cache = self.model.prefill(src, capacity=min(width, 64))
        row_seqs = [s for s in seqs for _ in range(s.rows)]
        if len(row_seqs) != len(seqs):
            index = [i for i, s in enumerate(seqs) for _ in range(s.rows)]
            cache = cache.select(torch.tensor(index, device=self.device))
        for s in seqs:
            if s.params.strategy == "beam":
                s.beam = BeamSearch(s.params, self.eos_id)
            if s.job.stream:
                s.detok = IncrementalDetokenizer(self.tokenizer)
        n = len(row_seqs)
        forced = None
        if any(s.forced is not None for s in seqs):
            forced = torch.tensor([-1 if s.forced is None else s.forced for s in row_seqs],
                                  device=self.device)
        tokens, forced = decoder_start(cfg.bos_id, n, self.device, forced,
                                       self.tokenizer.prompting.forced_start)
        return RunningBatch(
            seqs=list[Sequence | None](row_seqs),  # rows may be parked later
            cache=cache,
            sampling=SamplingBatch.from_params([s.params for s in row_seqs], self.device),
            tokens=tokens,
            generated=torch.full((n, width), cfg.pad_id, dtype=torch.long, device=self.device),
            n_generated=torch.zeros(n, dtype=torch.long, device=self.device),
            logprob=torch.zeros(n, device=self.device),
            forced=forced,
        )

    @torch.inference_mode()
    def step(self, batch: RunningBatch) -> StepOutput:
        raw = self.model.decode_step(batch.tokens, batch.cache).float()
        # One reduction finds the non-finite rows: a NaN or inf anywhere makes the row's
        # sum non-finite (isfinite over all of (rows, vocab) costs several times more).
        bad = ~torch.isfinite(raw.sum(dim=-1))
        if bool(bad.any()):
            # Neutral logits for the broken rows (they are failed after this step), so
            # sampling and beam search on the other rows do not trip over NaN.
            raw = raw.masked_fill(bad[:, None], 0.0)
        logits = constrain(raw, batch.sampling, batch.generated, batch.n_generated, self.eos_id)
        if batch.forced is not None:
            # Rows at their first step that must start with a given token (as generate()
            # forces it, beams included); after this step no row is at its first.
            logits = force_tokens(logits, batch.forced)
            batch.forced = None
        if self.model.config.forced_eos:  # rows at their last allowed step can only end
            sampling = batch.sampling
            at_limit = (batch.n_generated == sampling.max_new_tokens - 1) & ~sampling.ignore_eos
            logits = force_eos(logits, at_limit, self.eos_id)
        tokens, lp = choose(logits, batch.sampling)
        beam_rows = self._beam_step(batch, logits, tokens)
        batch.generated.scatter_(1, batch.n_generated[:, None], tokens[:, None])
        batch.n_generated += 1
        if lp is not None:
            batch.logprob += lp
        batch.tokens = tokens
        eos = (tokens == self.eos_id) & ~batch.sampling.ignore_eos
        done = eos | (batch.n_generated >= batch.sampling.max_new_tokens)
        if beam_rows is not None:
            done &= ~beam_rows
        if batch.parked is not None:  # computed on, never finished (see RunningBatch)
            done &= ~batch.parked
            bad &= ~batch.parked
            batch.step_done()
        return StepOutput(tokens=tokens.tolist(), done=done, eos=eos, bad=bad)

    def _beam_step(self, batch: RunningBatch, logits: Tensor, tokens: Tensor) -> Tensor | None:
        """Advance every beam sequence; reorder rows to follow their parents. Returns a
        (rows,) mask of beam rows, or None when the batch has no beam sequence."""
        starts = [(i, s) for i, s in batch.watched() if s.beam is not None]
        if not starts:
            return None
        index = torch.arange(batch.size, device=self.device)
        mask = torch.zeros(batch.size, dtype=torch.bool, device=self.device)
        for g, seq in starts:
            assert seq.beam is not None
            k = seq.rows
            parents, next_tokens = seq.beam.step(logits[g : g + k].log_softmax(dim=-1))
            index[g : g + k] = g + torch.tensor(parents, device=self.device)
            tokens[g : g + k] = torch.tensor(next_tokens, device=self.device)
            mask[g : g + k] = True
        batch.reorder(index)
        return mask
