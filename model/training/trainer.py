"""The generic training loop shared by every stage: fit, validate, save, resume.

A stage hands the `Trainer` its data (`StageData`: the batch list of an epoch, how to
build one batch, the validation batches) and its `Objective` (the loss of one batch),
and the loop does the rest the same way for all of them:

* AdamW, linear warmup then inverse-sqrt / cosine / linear decay, gradient clipping,
  gradient accumulation over `grad_accum` micro-batches, bf16 autocast where bf16
  is native (CUDA, or a CPU with AMX / AVX512-BF16);
* DistributedDataParallel: every rank builds the same batches and trains on its rows
  of each (no overlap). Losses are summed over target tokens and divided by the step's
  *global* target count, so N ranks take exactly the step one process would;
* periodic validation (loss, token accuracy, optional quick BLEU), best-checkpoint
  selection and early stopping;
* an atomic training state every `save_interval` steps, from which `fit()` resumes
  bit-for-bit: the data order is a pure function of (seed, epoch), the position is
  (epoch, batch), and the RNG states of every rank are saved with the weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.sora import Sora
from model.training.batching import IGNORE_INDEX, Batch, shard
from model.training.distributed import DistContext
from model.training.recipe import StageRecipe
from model.training.state import (
    find_state,
    flatten_optimizer,
    load_state,
    rng_state,
    save_state,
    set_rng_state,
    unflatten_optimizer,
)

log = logging.getLogger(__name__)


class StageData(Protocol):
    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Global batches (example indices) of `epoch`, in training order."""
        ...

    def target_tokens(self, rows: np.ndarray) -> int:
        """Label tokens (targets + eos) of these examples: the loss normaliser."""
        ...

    def make_batch(self, rows: np.ndarray, epoch: int) -> Batch: ...

    def valid_batches(self, rank: int, world_size: int) -> list[Batch]:
        """This rank's shard of every validation batch."""
        ...


class Objective(Protocol):
    def loss(
        self, model: nn.Module, batch: Batch, scale: float, step: int
    ) -> tuple[Tensor, dict[str, float]]:
        """The (already scaled) loss to backpropagate, and stats to sum for logging.
        `stats["loss_sum"]`/`stats["targets"]` give the logged training loss."""
        ...

    def state_tensors(self) -> dict[str, Tensor]: ...

    def state_meta(self) -> dict[str, Any]: ...

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None: ...


def token_loss_sum(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Summed cross-entropy over label tokens. logits (batch, tgt, vocab); labels (batch, tgt)."""
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
        label_smoothing=label_smoothing,
    )


@dataclass
class MLE:
    """Teacher-forced likelihood: the pre-training and fine-tuning objective."""

    label_smoothing: float = 0.0

    def loss(
        self, model: nn.Module, batch: Batch, scale: float, step: int
    ) -> tuple[Tensor, dict[str, float]]:
        logits = model(batch.src, batch.tgt).logits  # (batch, tgt_len, vocab)
        total = token_loss_sum(logits, batch.labels, self.label_smoothing)
        return total * scale, {"loss_sum": float(total.detach()), "targets": float(batch.n_targets)}

    def state_tensors(self) -> dict[str, Tensor]:
        return {}

    def state_meta(self) -> dict[str, Any]:
        return {}

    def load_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        pass


def lr_at(step: int, s: StageRecipe) -> float:
    """Learning rate for optimizer step `step` (0-based): warmup, then decay."""
    warm = max(s.warmup_steps, 0)
    if warm and step < warm:
        return s.lr * (step + 1) / warm
    if s.schedule == "constant":
        return s.lr
    if s.schedule == "inverse_sqrt":
        return s.lr * math.sqrt(max(warm, 1) / (step + 1))
    total = max(s.max_steps, warm + 1)
    progress = min(1.0, (step - warm) / max(total - warm, 1))
    floor = s.lr * s.min_lr_ratio
    if s.schedule == "cosine":
        return floor + (s.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return floor + (s.lr - floor) * (1 - progress)


@dataclass
class Progress:
    """What the CLI's progress bar shows after each optimizer step."""

    stage: str
    step: int
    max_steps: int
    epoch: int
    loss: float
    lr: float
    tokens_per_s: float
    elapsed_s: float


@dataclass
class FitResult:
    steps: int
    epochs: int
    best_step: int
    best: dict[str, float]  # validation metrics of the selected checkpoint
    last: dict[str, float]  # validation metrics at the end
    stopped_early: bool
    tokens: int
    train_seconds: float


@dataclass
class Trainer:
    stage: str
    model: Sora
    train_model: nn.Module  # `model`, or its DistributedDataParallel wrapper
    recipe: StageRecipe
    data: StageData
    objective: Objective
    work_dir: Path  # OUT/.work/<stage>: state/, best/ (rank 0 writes)
    dist: DistContext
    seed: int
    metrics_path: Path
    bf16: bool = False
    save_best: Callable[[Sora, dict[str, float], int], None] | None = None
    extra_validation: Callable[[Sora], dict[str, float]] | None = None  # rank 0 only
    on_progress: Callable[[Progress], None] | None = None
    optimizer: torch.optim.Optimizer = field(init=False)
    # position and bookkeeping, all saved in the state
    step: int = 0
    epoch: int = 0
    batch_pos: int = 0
    tokens: int = 0
    elapsed: float = 0.0
    best_value: float | None = None
    best_step: int = -1
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_validations: int = 0
    finished: bool = False
    stopped_early: bool = False
    last_metrics: dict[str, float] = field(default_factory=dict)
    validated_step: int = -1
    out_of_time: bool = False

    def __post_init__(self) -> None:
        s = self.recipe
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.model.named_parameters():
            # No weight decay on biases, norms and embeddings (standard Transformer practice).
            (no_decay if p.ndim < 2 or "embed" in name else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": s.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=s.lr, betas=s.betas, eps=s.eps,
        )
        self._batches: tuple[int, list[np.ndarray]] | None = None
        self._mark = time.perf_counter()

    def _tick(self) -> None:
        """Fold wall time since the last mark into `elapsed` (saved, so it survives
        resumes; time a killed run spent after its last save is counted again when
        the steps are redone, as an uninterrupted run would have spent it)."""
        now = time.perf_counter()
        self.elapsed += now - self._mark
        self._mark = now

    # -- state -----------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.work_dir / "state"

    def _meta(self) -> dict[str, Any]:
        return {
            "stage": self.stage, "step": self.step, "epoch": self.epoch,
            "batch_pos": self.batch_pos, "tokens": self.tokens, "elapsed": self.elapsed,
            "best_value": self.best_value, "best_step": self.best_step,
            "best_metrics": self.best_metrics, "bad_validations": self.bad_validations,
            "finished": self.finished, "stopped_early": self.stopped_early,
            "last_metrics": self.last_metrics, "validated_step": self.validated_step,
            "out_of_time": self.out_of_time,
            "world_size": self.dist.world_size,
            "seed": self.seed,
        }

    def save(self) -> None:
        """Every rank contributes its RNG state; rank 0 writes the directory."""
        self._tick()
        rngs = self.dist.all_gather_bytes(rng_state(self.dist.device))
        if not self.dist.is_main:
            return
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        opt_tensors, opt_meta = flatten_optimizer(self.optimizer.state_dict(), "optim")
        tensors.update(opt_tensors)
        tensors.update({f"rng.{r}": t for r, t in enumerate(rngs)})
        tensors.update({f"objective.{k}": v for k, v in self.objective.state_tensors().items()})
        meta = self._meta()
        meta["optimizer"] = opt_meta
        meta["objective"] = self.objective.state_meta()
        save_state(self.state_dir, tensors, meta)

    def try_resume(self) -> bool:
        """Load the saved state if there is one; True when resumed."""
        if find_state(self.state_dir) is None:
            return False
        tensors, meta = load_state(self.state_dir)
        self.model.load_state_dict(
            {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        )
        self.optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"], "optim"))
        self.objective.load_state(
            {k[len("objective."):]: v for k, v in tensors.items() if k.startswith("objective.")},
            meta["objective"],
        )
        for key in ("step", "epoch", "batch_pos", "tokens", "elapsed", "best_value",
                    "best_step", "best_metrics", "bad_validations", "finished",
                    "stopped_early", "last_metrics", "validated_step", "out_of_time"):
            setattr(self, key, meta[key])
        if self.finished and not self.stopped_early:
            # A resumed recipe with a larger step/time budget extends a finished stage.
            limit = self.recipe.max_minutes * 60
            self.out_of_time = bool(limit) and self.elapsed >= limit
            self.finished = self._out_of_budget()
        rng_key = f"rng.{self.dist.rank}"
        if rng_key in tensors and meta["world_size"] == self.dist.world_size:
            set_rng_state(tensors[rng_key], self.dist.device)
        else:
            log.warning("%s: world size changed (%d -> %d); RNG streams restart",
                        self.stage, meta["world_size"], self.dist.world_size)
        if self.dist.is_main:
            self._truncate_metrics()
        log.info("%s: resumed at step %d (epoch %d, batch %d)", self.stage, self.step,
                 self.epoch, self.batch_pos)
        return True

    def _truncate_metrics(self) -> None:
        """Drop metric lines this stage wrote after the saved state (they will be redone)."""
        if not self.metrics_path.is_file():
            return
        keep = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the kill
            if row.get("stage") != self.stage or row.get("step", 0) <= self.step:
                keep.append(line)
        self.metrics_path.write_text("".join(k + "\n" for k in keep), encoding="utf-8")

    def _write_metrics(self, row: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"stage": self.stage, **row}) + "\n")

    # -- validation ------------------------------------------------------------------

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Loss and token accuracy over all ranks' shards (+ rank 0's extra metrics)."""
        self.model.eval()
        loss_sum = targets = correct = 0.0
        for batch in self.data.valid_batches(self.dist.rank, self.dist.world_size):
            batch = batch.to(self.dist.device)
            with self._autocast():
                logits = self.model(batch.src, batch.tgt).logits
            loss_sum += float(token_loss_sum(logits, batch.labels))
            mask = batch.labels != IGNORE_INDEX
            targets += float(mask.sum())
            correct += float(((logits.argmax(-1) == batch.labels) & mask).sum())
        loss_sum, targets, correct = self.dist.all_reduce_sum([loss_sum, targets, correct])
        metrics = {
            "valid_loss": loss_sum / max(targets, 1.0),
            "valid_token_acc": 100.0 * correct / max(targets, 1.0),
        }
        if self.extra_validation is not None:
            extra = self.extra_validation(self.model) if self.dist.is_main else {}
            # Every rank joins the broadcast (whatever rank 0 found), so selection and
            # early stopping agree everywhere.
            extra["bleu"] = self.dist.broadcast_float(extra.get("bleu", 0.0))
            metrics.update(extra)
        self.model.train()
        return metrics

    def _improved(self, metrics: dict[str, float]) -> bool:
        if self.recipe.select == "last":
            return True
        value = metrics[self.recipe.select]
        if self.best_value is None:
            return True
        if self.recipe.select == "valid_loss":
            return value < self.best_value
        return value > self.best_value

    def _after_validation(self, metrics: dict[str, float]) -> None:
        self.last_metrics, self.validated_step = metrics, self.step
        self._write_metrics({"step": self.step, "kind": "valid", **metrics})
        if self._improved(metrics):
            self.best_value = metrics.get(self.recipe.select)
            self.best_step, self.best_metrics = self.step, metrics
            self.bad_validations = 0
            if self.save_best is not None and self.dist.is_main:
                self.save_best(self.model, metrics, self.step)
        else:
            self.bad_validations += 1
        log.info("%s step %d: %s (best step %d)", self.stage, self.step,
                 ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()), self.best_step)
        if self.recipe.patience and self.bad_validations >= self.recipe.patience:
            log.info("%s: no improvement in %d validations, stopping early", self.stage,
                     self.bad_validations)
            self.stopped_early = True

    # -- the loop --------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.bf16:
            return torch.autocast(self.dist.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _epoch_batches(self, epoch: int) -> list[np.ndarray]:
        if self._batches is None or self._batches[0] != epoch:
            self._batches = (epoch, self.data.epoch_batches(epoch))
        return self._batches[1]

    def _out_of_budget(self) -> bool:
        s = self.recipe
        if s.max_steps and self.step >= s.max_steps:
            return True
        if s.max_epochs and self.epoch >= s.max_epochs:
            return True
        if s.max_minutes and not self.out_of_time:
            # rank 0's clock decides, so every rank stops at the same step
            over = float(self.elapsed >= s.max_minutes * 60)
            if self.dist.broadcast_float(over) > 0:
                log.info("%s: time budget of %.1f minutes used up at step %d", self.stage,
                         s.max_minutes, self.step)
                self.out_of_time = True
        return self.out_of_time

    def fit(self) -> FitResult:
        """Train until max_steps / max_epochs / early stopping; resumable at any point."""
        s = self.recipe
        if not self.try_resume():
            if self.dist.is_main:
                self._truncate_metrics()  # lines of an earlier attempt without a state
            torch.manual_seed(self.seed * 1000 + self.dist.rank)
            if self.dist.device.type == "cuda":
                torch.cuda.manual_seed(self.seed * 1000 + self.dist.rank)
        self.model.train()
        self._mark = time.perf_counter()
        log_stats: dict[str, float] = {}
        log_micro = 0
        log_tokens, log_time = 0, time.perf_counter()
        last_save = self.step
        while not self.finished:
            if self.stopped_early or self._out_of_budget():
                if self.validated_step != self.step:
                    self._after_validation(self.validate())
                self.finished = True
                self.save()
                break
            batches = self._epoch_batches(self.epoch)
            if self.batch_pos >= len(batches):
                if not batches:
                    raise RuntimeError(f"{self.stage}: an epoch yields no batches")
                self.epoch, self.batch_pos = self.epoch + 1, 0
                continue
            group = batches[self.batch_pos : self.batch_pos + s.grad_accum]
            norm = sum(self.data.target_tokens(rows) for rows in group)
            # DDP averages gradients over ranks; scaling by world/norm turns each rank's
            # summed loss into its share of the global per-token mean.
            scale = self.dist.world_size / max(norm, 1)
            lr = lr_at(self.step, s)
            for g in self.optimizer.param_groups:
                g["lr"] = lr
            step_tokens = 0
            for i, rows in enumerate(group):
                batch = self.data.make_batch(shard(rows, self.dist.rank, self.dist.world_size),
                                             self.epoch).to(self.dist.device)
                sync = i == len(group) - 1 or not hasattr(self.train_model, "no_sync")
                ctx = contextlib.nullcontext() if sync else self.train_model.no_sync()  # type: ignore[operator]
                with ctx:
                    with self._autocast():
                        loss, stats = self.objective.loss(self.train_model, batch, scale, self.step)
                    loss.backward()
                for k, v in stats.items():
                    log_stats[k] = log_stats.get(k, 0.0) + v
                log_micro += 1
                step_tokens += batch.n_tokens
            if s.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            self.batch_pos += len(group)
            step_tokens = int(self.dist.all_reduce_sum([float(step_tokens)])[0])
            self.tokens += step_tokens
            log_tokens += step_tokens
            self._tick()

            if self.step % s.log_interval == 0:
                keys = sorted(log_stats)
                sums = self.dist.all_reduce_sum([log_stats[k] for k in keys] + [log_micro])
                totals = dict(zip(keys, sums, strict=False))
                now = time.perf_counter()
                tps = log_tokens / max(now - log_time, 1e-9)
                loss_value = totals.pop("loss_sum", 0.0) / max(totals.pop("targets", 1.0), 1.0)
                # other stats (rewards, discriminator loss, ...) are per-micro-batch means
                extra = {k: v / max(sums[-1], 1.0) for k, v in totals.items()}
                self._write_metrics({"step": self.step, "kind": "train", "loss": loss_value,
                                     **extra, "lr": lr, "epoch": self.epoch,
                                     "tokens": self.tokens, "tokens_per_s": tps,
                                     "elapsed_s": self.elapsed})
                if self.on_progress is not None and self.dist.is_main:
                    self.on_progress(Progress(self.stage, self.step, s.max_steps, self.epoch,
                                              loss_value, lr, tps, self.elapsed))
                log_stats, log_micro = {}, 0
                log_tokens, log_time = 0, now
            validated = False
            if self.step % s.valid_interval == 0 and not self._out_of_budget():
                self._after_validation(self.validate())
                validated = True
            if validated or self.step - last_save >= s.save_interval:
                self.save()
                last_save = self.step
        return FitResult(self.step, self.epoch, self.best_step, self.best_metrics,
                         self.last_metrics,
                         self.stopped_early, self.tokens, self.elapsed)
