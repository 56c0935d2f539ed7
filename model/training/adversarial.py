"""Stage 4: adversarial fine-tuning with a discriminator reward (policy gradient).

Each generator step:

1. sample an output for every source from the generator (top-k, temperature);
2. train the discriminator `disc_steps` times to tell (source, reference) from
   (source, sample) (binary cross-entropy);
3. reward each sample with the updated discriminator's P(reference), and subtract a
   moving-average baseline (variance reduction; REINFORCE with baseline);
4. update the generator on  mle_weight * NLL(reference) + pg_weight * -(A * log p(sample)),
   one forward pass over [references; samples] (one pass also keeps DDP simple).

The likelihood term keeps the generator from drifting into whatever fools the
discriminator. During the first `disc_warmup_steps` the generator trains on the
likelihood only, while the discriminator learns to tell the two apart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.discriminator import Discriminator, pad, pair_ids
from model.generation import generate
from model.sampling import DecodingParams
from model.sora import Sora
from model.tokenizer import SoraTokenizer
from model.training.batching import IGNORE_INDEX, Batch
from model.training.distributed import DistContext, unwrap
from model.training.finetune import QuickBleu
from model.training.recipe import AdversarialRecipe
from model.training.state import flatten_optimizer, unflatten_optimizer
from model.training.trainer import token_loss_sum

log = logging.getLogger(__name__)


def _rows(ids: Tensor, stop: set[int]) -> list[list[int]]:
    """Each row's ids up to (not including) the first id in `stop`."""
    out = []
    for row in ids.tolist():
        r: list[int] = []
        for t in row:
            if t in stop:
                break
            r.append(t)
        out.append(r)
    return out


@dataclass
class AdversarialObjective:
    """`Objective` for the Trainer: discriminator update + generator MLE/PG loss."""

    recipe: AdversarialRecipe
    tokenizer: SoraTokenizer
    disc: Discriminator
    disc_train: nn.Module  # `disc`, or its DDP wrapper
    dist: DistContext
    max_new_tokens: int
    baseline: float = 0.0
    baseline_steps: int = 0
    disc_opt: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        self.disc_opt = torch.optim.AdamW(self.disc.parameters(), lr=self.recipe.disc_lr,
                                          weight_decay=0.01)

    # -- state (saved with the trainer's) ----------------------------------------------

    def state_tensors(self) -> dict[str, Tensor]:
        tensors = {f"disc.{k}": v for k, v in self.disc.state_dict().items()}
        opt, _ = flatten_optimizer(self.disc_opt.state_dict(), "disc_optim")
        return {**tensors, **opt}

    def state_meta(self) -> dict[str, Any]:
        _, skeleton = flatten_optimizer(self.disc_opt.state_dict(), "disc_optim")
        return {"baseline": self.baseline, "baseline_steps": self.baseline_steps,
                "disc_optim": skeleton}

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        self.disc.load_state_dict(
            {k[len("disc."):]: v for k, v in tensors.items() if k.startswith("disc.")}
        )
        self.disc_opt.load_state_dict(
            unflatten_optimizer(tensors, meta["disc_optim"], "disc_optim")
        )
        self.baseline = float(meta["baseline"])
        self.baseline_steps = int(meta["baseline_steps"])

    # -- one micro-batch -----------------------------------------------------------------

    def _sample(self, model: Sora, sources: list[list[int]], limit: int) -> list[list[int]]:
        r = self.recipe
        params = DecodingParams(strategy="sample", max_new_tokens=limit,
                                temperature=r.sample_temperature, top_k=r.sample_top_k)
        was_training = model.training
        model.eval()
        try:
            results = generate(model, self.tokenizer, sources, params)
        finally:
            model.train(was_training)
        return [res.token_ids for res in results]

    def _disc_inputs(self, sources: list[list[int]], outputs: list[list[int]]) -> list[list[int]]:
        t = self.tokenizer
        return [pair_ids(s, o, t.sep_id, t.eos_id, self.disc.config)
                for s, o in zip(sources, outputs, strict=True)]

    def _train_disc(self, real: list[list[int]], fake: list[list[int]]) -> tuple[float, float]:
        device = self.dist.device
        ids = pad(real + fake, self.tokenizer.pad_id, device)
        labels = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))]).to(device)
        loss_value = acc = 0.0
        self.disc.train()
        for _ in range(self.recipe.disc_steps):
            logits = self.disc_train(ids).float()
            loss = F.binary_cross_entropy_with_logits(logits, labels)
            self.disc_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.disc.parameters(), 1.0)
            self.disc_opt.step()
            loss_value = float(loss.detach())
            acc = float(((logits > 0).float() == labels).float().mean())
        return loss_value, acc

    def loss(
        self, model: nn.Module, batch: Batch, scale: float, step: int
    ) -> tuple[Tensor, dict[str, float]]:
        r = self.recipe
        t = self.tokenizer
        gen = unwrap(model)
        assert isinstance(gen, Sora)
        sources = _rows(batch.src, {t.pad_id})
        refs = _rows(batch.labels, {IGNORE_INDEX, t.eos_id})
        # Samples much longer than every reference are degenerate; stop them early
        # (sampling dominates the step's cost on a CPU).
        limit = min(self.max_new_tokens, 2 * max(len(x) for x in refs) + 8)
        samples = self._sample(gen, sources, limit)
        d_loss, d_acc = self._train_disc(self._disc_inputs(sources, refs),
                                         self._disc_inputs(sources, samples))
        with torch.no_grad():
            self.disc.eval()
            fake = pad(self._disc_inputs(sources, samples), t.pad_id, self.dist.device)
            reward = torch.sigmoid(self.disc(fake).float())  # (batch,) P(reference)
            self.disc.train()
        total, count = self.dist.all_reduce_sum([float(reward.sum()), float(reward.numel())])
        mean_reward = total / max(count, 1.0)
        if self.baseline_steps == 0:
            self.baseline = mean_reward
        advantage = reward - self.baseline  # (batch,)
        self.baseline = r.baseline_decay * self.baseline + (1 - r.baseline_decay) * mean_reward
        self.baseline_steps += 1

        # One teacher-forced pass over [references; samples] with the same sources.
        n = len(sources)
        sample_tgt = [[*s, t.eos_id] if len(s) < limit else s for s in samples]
        width = max(batch.tgt.shape[1], max(len(s) for s in sample_tgt))
        tgt = torch.full((2 * n, width), t.pad_id, dtype=torch.long)
        labels = torch.full((2 * n, width), IGNORE_INDEX, dtype=torch.long)
        tgt[:n, : batch.tgt.shape[1]] = batch.tgt.cpu()
        labels[:n, : batch.labels.shape[1]] = batch.labels.cpu()
        for i, s in enumerate(sample_tgt):
            tgt[n + i, 0] = t.bos_id
            tgt[n + i, 1 : len(s)] = torch.tensor(s[:-1], dtype=torch.long)
            labels[n + i, : len(s)] = torch.tensor(s, dtype=torch.long)
        tgt, labels = tgt.to(self.dist.device), labels.to(self.dist.device)
        src = torch.cat([batch.src, batch.src])
        logits = model(src, tgt).logits  # (2n, width, vocab)
        mle_sum = token_loss_sum(logits[:n], labels[:n])
        # (n, width) per-token log p of the sampled tokens, 0 where ignored
        lp = -F.cross_entropy(logits[n:].float().transpose(1, 2), labels[n:],
                              ignore_index=IGNORE_INDEX, reduction="none")
        seq_logprob = lp.sum(dim=1)  # (n,)
        pg_sum = -(advantage.detach() * seq_logprob).sum()
        pg_weight = r.pg_weight if step >= r.disc_warmup_steps else 0.0
        loss = (r.mle_weight * mle_sum + pg_weight * pg_sum) * scale
        stats = {
            "loss_sum": float(mle_sum.detach()), "targets": float(batch.n_targets),
            "reward": float(reward.mean()), "baseline": self.baseline,
            "disc_loss": d_loss, "disc_acc": d_acc,
            "sample_len": sum(len(s) for s in samples) / max(n, 1),
        }
        return loss, stats


@dataclass
class AdversarialValidation:
    """Quick BLEU of greedy outputs, and how often the discriminator tells them from the
    references (0.5 = the generator fools it)."""

    bleu: QuickBleu
    disc: Discriminator
    tokenizer: SoraTokenizer

    def __call__(self, model: Sora) -> dict[str, float]:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            hyps = self.bleu.hypotheses(model)
        model.train(was_training)
        metrics = self.bleu.score(hyps)
        t = self.tokenizer
        real = [pair_ids(s, t.encode(ref), t.sep_id, t.eos_id, self.disc.config)
                for s, ref in zip(self.bleu.sources, self.bleu.references, strict=True)]
        fake = [pair_ids(s, t.encode(h), t.sep_id, t.eos_id, self.disc.config)
                for s, h in zip(self.bleu.sources, hyps, strict=True)]
        device = next(self.disc.parameters()).device
        was = self.disc.training
        self.disc.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(real), 64):
                correct += int((self.disc(pad(real[i : i + 64], t.pad_id, device)) > 0).sum())
                correct += int((self.disc(pad(fake[i : i + 64], t.pad_id, device)) <= 0).sum())
        self.disc.train(was)
        metrics["disc_acc"] = 100.0 * correct / max(2 * len(real), 1)
        return metrics
