"""A training run, stage by stage: tokenizer -> pretrain -> finetune -> adversarial -> final.

    OUT/recipe.yaml, OUT/run.json    the recipe this run uses
    OUT/metrics.jsonl                one JSON line per log/validation, every stage
    OUT/tokenizer/                   tokenizer.json + info.json
    OUT/{pretrain,finetune,adversarial}/   checkpoint directories (best of the stage)
    OUT/final/                       the checkpoint to ship, with the full provenance
    OUT/.work/                       caches, training states, best-so-far checkpoints

A stage whose checkpoint exists is done and skipped; an unfinished one resumes from its
training state under OUT/.work. Only rank 0 writes; other ranks wait at barriers.

With `init_from: DIR` the run fine-tunes that checkpoint instead: its tokenizer and
architecture are kept (no tokenizer or pretrain stage), fine-tuning starts from its
weights, training pairs are built in its own input format (its prompting), and every
checkpoint the run writes keeps its serving declaration (architecture, tasks,
languages, ...), so the result serves like the original.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from model import discriminator as disc_lib
from model.checkpoint import (
    MANIFEST,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    sha256_file,
)
from model.config import SoraConfig
from model.device import native_bf16
from model.sora import Sora
from model.tokenizer import SoraTokenizer
from model.training import finetune, pretrain
from model.training.adversarial import AdversarialObjective, AdversarialValidation
from model.training.distributed import DistContext
from model.training.plot import loss_plot, read_metrics
from model.training.recipe import STAGES, TASKS, Recipe, RecipeError, check_data, run_stages
from model.training.tokenizer_stage import load_stage_tokenizer, tokenizer_done, train_tokenizer
from model.training.trainer import MLE, Objective, Progress, StageData, Trainer

log = logging.getLogger(__name__)

MODEL_STAGES = ("pretrain", "finetune", "adversarial")
# A changed value of these keys would make a resumed run a different model.
FROZEN_KEYS = ("seed", "max_source_len", "max_target_len", "model", "tokenizer", "init_from")
# Manifest keys a fine-tuned checkpoint keeps from its `init_from` checkpoint: what it
# serves and how a task becomes its input, and where an imported model came from.
INHERITED_KEYS = ("architecture", "tasks", "languages", "language_pairs", "prompting",
                  "provenance")


class RunError(RuntimeError):
    """A run that cannot start or continue (existing output, missing stage, ...)."""


@dataclass
class Run:
    recipe: Recipe
    stages: tuple[str, ...]
    dist: DistContext
    resume: bool = False
    on_progress: Callable[[Progress], None] | None = None

    @property
    def out(self) -> Path:
        return Path(self.recipe.out_dir)

    @property
    def work(self) -> Path:
        return self.out / ".work"

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def bf16(self) -> bool:
        if self.recipe.precision == "auto":
            return native_bf16(self.dist.device)
        return self.recipe.precision == "bf16"


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


def _prepare_out(run: Run) -> None:
    """Refuse to overwrite a run unless resuming; refuse to resume a different model."""
    run_file = run.out / "run.json"
    current = run.recipe.to_dict()
    exists = run_file.is_file()
    non_empty = run.out.is_dir() and any(run.out.iterdir())
    run.dist.barrier()  # every rank has looked before rank 0 writes
    if exists:
        if not run.resume:
            raise RunError(f"{run.out} already holds a run; pass --resume to continue it "
                           "or choose another --out")
        saved = json.loads(run_file.read_text(encoding="utf-8"))["recipe"]
        old, new = _flat(saved), _flat(current)
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        frozen = [k for k in changed if k.split(".")[0] in FROZEN_KEYS]
        if frozen:
            raise RunError(f"cannot resume {run.out}: the recipe changed {', '.join(frozen)}")
        if changed:
            log.warning("resuming with recipe changes: %s", ", ".join(changed))
    elif run.resume and non_empty:
        raise RunError(f"--resume: {run.out} has no run.json; not a training run directory")
    if run.dist.is_main:
        run.out.mkdir(parents=True, exist_ok=True)
        run_file.write_text(json.dumps({"recipe": current, "stages": list(run.stages)},
                                       indent=2) + "\n", encoding="utf-8")
        (run.out / "recipe.yaml").write_text(yaml.safe_dump(current, sort_keys=False),
                                             encoding="utf-8")
    run.dist.barrier()


def model_config(recipe: Recipe, tokenizer: SoraTokenizer) -> SoraConfig:
    m = recipe.model
    return SoraConfig(
        vocab_size=tokenizer.vocab_size, d_model=m.d_model, n_heads=m.n_heads,
        n_encoder_layers=m.n_encoder_layers, n_decoder_layers=m.n_decoder_layers, d_ff=m.d_ff,
        dropout=m.dropout, max_source_positions=recipe.max_source_len,
        max_target_positions=recipe.max_target_len, activation=m.activation,
        pad_id=tokenizer.pad_id, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
        tie_embeddings=m.tie_embeddings,
    )


@dataclass(frozen=True)
class Base:
    """The checkpoint `init_from` names, verified: what fine-tuning keeps of it."""

    path: Path
    config: SoraConfig
    tokenizer: SoraTokenizer
    manifest: dict[str, Any]

    def lineage(self) -> dict[str, Any]:
        """Manifest entries for every checkpoint trained from this one."""
        inherited = {k: self.manifest[k] for k in INHERITED_KEYS if k in self.manifest}
        return {**inherited, "init_from": {
            "path": str(self.path.resolve()), "name": self.manifest.get("name"),
            "manifest_sha256": sha256_file(self.path / MANIFEST)}}


def load_base(recipe: Recipe) -> Base | None:
    """The `init_from` checkpoint (None without one), verified by the checkpoint loader
    (hashes, safetensors; never pickle) and checked against the recipe."""
    if not recipe.init_from:
        return None
    path = Path(recipe.init_from)
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise RunError(f"init_from: {e}") from e
    cfg = ckpt.model.config
    problems = [
        f"{key} is {getattr(recipe, key)} but {path} has {limit} positions"
        for key, limit in (("max_source_len", cfg.max_source_positions),
                           ("max_target_len", cfg.max_target_positions))
        if getattr(recipe, key) > limit
    ]
    tasks = ckpt.manifest.get("tasks", TASKS)
    problems += [
        f"finetune.mixture.{t}: {path} does not serve {t} (it serves {', '.join(tasks)})"
        for t, w in recipe.finetune.mixture.items() if w > 0 and t not in tasks
    ]
    if problems:
        raise RunError("init_from: " + "; ".join(problems))
    return Base(path, cfg, ckpt.tokenizer, ckpt.manifest)


def stage_done(run: Run, stage: str) -> bool:
    if stage == "tokenizer":
        return tokenizer_done(run.out / "tokenizer")
    return (run.out / stage / "manifest.json").is_file()


def _initial_model(run: Run, stage: str, tokenizer: SoraTokenizer, base: Base | None) -> Sora:
    """The previous stage's checkpoint, else the `init_from` one (either with this
    recipe's dropout), else a fresh model."""
    if base is not None:
        config = replace(base.config, dropout=run.recipe.model.dropout)
    else:
        config = model_config(run.recipe, tokenizer)
    previous = {"finetune": "pretrain", "adversarial": "finetune"}.get(stage)
    start = run.out / previous if previous and stage_done(run, previous) else None
    if start is None and base is not None:
        start = base.path
    if start is not None:
        try:
            ckpt = load_checkpoint(start)
        except CheckpointError as e:
            raise RunError(f"{stage}: cannot start from {start}: {e}") from e
        if replace(ckpt.model.config, dropout=config.dropout) != config:
            raise RunError(f"{start} does not match the recipe's model shape")
        model = Sora(config)
        model.load_state_dict(ckpt.model.state_dict())
        log.info("%s: starting from %s", stage, start)
    else:
        if stage == "adversarial":
            raise RunError("the adversarial stage needs a fine-tuned model: run finetune first")
        torch.manual_seed(run.recipe.seed)
        model = Sora(config)
        log.info("%s: starting from a fresh model (%d parameters)", stage, model.num_parameters())
    return model.to(run.dist.device)


def _stage_data(run: Run, stage: str, tokenizer: SoraTokenizer, config: SoraConfig) -> StageData:
    r = run.recipe
    cache = run.work / "cache"
    if stage == "pretrain":
        return pretrain.build_data(tokenizer, Path(r.data_dir), r.pretrain, r.seed,
                                   r.max_source_len, cache, run.dist)
    s = r.finetune if stage == "finetune" else r.adversarial
    tasks = [t for t in TASKS if s.mixture.get(t, 0) > 0]
    data_dir = Path(r.data_dir)
    train = finetune.cached_examples(tokenizer, data_dir, "train", tasks, r.max_source_len,
                                     r.max_target_len, cache, run.dist)
    valid = finetune.cached_examples(tokenizer, data_dir, "valid", tasks, r.max_source_len,
                                     r.max_target_len, cache, run.dist, limit=s.valid_examples)
    # The model's own ids: its decoder starts from config.bos_id, whatever the tokenizer,
    # or from each target's language code (mBART-cc25).
    return finetune.PairData(train, valid, dict(s.mixture), s.batch_tokens, r.seed + 1,
                             config.pad_id, config.bos_id, config.eos_id, run.dist.world_size,
                             wrap_start=tokenizer.prompting.forced_start)


def _quick_bleu(run: Run, tokenizer: SoraTokenizer, n: int) -> finetune.QuickBleu:
    r = run.recipe
    records = finetune.read_split(Path(r.data_dir), "valid", ["translate"])
    return finetune.QuickBleu.from_records(tokenizer, records, n, r.max_source_len,
                                           r.max_target_len)


def _extra_files(run: Run, stages: list[str]) -> dict[str, bytes]:
    try:
        return {"loss.png": loss_plot(read_metrics(run.metrics_path), stages)}
    except Exception as e:  # a plot must never cost a finished stage
        log.warning("could not draw the loss plot: %s", e)
        return {}


def _train_stage(run: Run, stage: str, tokenizer: SoraTokenizer, base: Base | None) -> float:
    """Train one stage (or finish it) and export its best checkpoint; returns the stage's
    wall time: the trainer's loop time over all sessions plus this session's setup."""
    r = run.recipe
    s = r.stage(stage)
    started = time.monotonic()
    model = _initial_model(run, stage, tokenizer, base)
    data = _stage_data(run, stage, tokenizer, model.config)
    work = run.work / stage
    objective: Objective = MLE(s.label_smoothing)
    extra: Callable[[Sora], dict[str, float]] | None = None
    disc: disc_lib.Discriminator | None = None
    if s.bleu_examples and stage != "pretrain":
        extra = _quick_bleu(run, tokenizer, s.bleu_examples)
    if stage == "adversarial":
        a = r.adversarial
        dconfig = disc_lib.DiscriminatorConfig(model.config, a.disc_hidden, r.max_source_len,
                                               r.max_target_len)
        disc = disc_lib.Discriminator.from_generator(model, dconfig).to(run.dist.device)
        objective = AdversarialObjective(a, tokenizer, disc, run.dist.wrap(disc), run.dist,
                                         r.max_target_len)
        if extra is not None:
            assert isinstance(extra, finetune.QuickBleu)
            extra = AdversarialValidation(extra, disc, tokenizer)

    def save_best(m: Sora, metrics: dict[str, float], step: int) -> None:
        files = disc_lib.to_files(disc) if disc is not None else {}
        save_checkpoint(work / "best", m, tokenizer,
                        info={"stage": stage, "step": step, "validation": metrics},
                        extra_files=files)

    trainer = Trainer(
        stage=stage, model=model, train_model=run.dist.wrap(model), recipe=s, data=data,
        objective=objective, work_dir=work, dist=run.dist, seed=r.seed + MODEL_STAGES.index(stage),
        metrics_path=run.metrics_path, bf16=run.bf16, save_best=save_best,
        extra_validation=extra, on_progress=run.on_progress,
    )
    setup = time.monotonic() - started
    result = trainer.fit()
    wall = round(result.train_seconds + setup, 1)
    if run.dist.is_main:
        best = load_checkpoint(work / "best")
        extra_files = _extra_files(run, [stage])
        for name in (disc_lib.WEIGHTS_FILE, disc_lib.CONFIG_FILE):
            if (work / "best" / name).is_file():
                extra_files[name] = (work / "best" / name).read_bytes()
        info = {
            **(base.lineage() if base is not None else {}),
            "name": f"{r.name}-{stage}",
            "training_stage": {
                "stage": stage, "steps": result.steps, "epochs": result.epochs,
                "best_step": result.best_step, "validation": result.best,
                "last_validation": result.last, "stopped_early": result.stopped_early,
                "tokens": result.tokens, "train_seconds": round(result.train_seconds, 1),
                "wall_seconds": wall,
            },
        }
        save_checkpoint(run.out / stage, best.model, tokenizer, info=info,
                        extra_files=extra_files)
        log.info("%s: done in %d steps; best step %d: %s", stage, result.steps,
                 result.best_step, result.best)
    run.dist.barrier()
    return wall


# -- adversarial before/after and the final checkpoint -----------------------------------


def _evaluate(run: Run, path: Path) -> dict[str, Any]:
    """Per-task validation scores of a checkpoint, and one mean score to compare by."""
    r = run.recipe
    n = r.adversarial.eval_examples
    ckpt = load_checkpoint(path, run.dist.device)
    records = finetune.read_split(Path(r.data_dir), "valid", list(TASKS))
    try:
        from model.training.evaluate import evaluate
    except ImportError:
        evaluate = None  # type: ignore[assignment]
    if evaluate is None or n == 0:
        quick = _quick_bleu(run, ckpt.tokenizer, max(n, 1))(ckpt.model)
        return {"scores": {"translate_bleu": quick.get("bleu", 0.0)},
                "score": quick.get("bleu", 0.0)}
    report = evaluate(ckpt, records, batch_size=32, max_examples=n)
    scores: dict[str, float] = {}
    bleu_sum = bleu_n = 0.0
    for g in report.groups:
        if g.task == "translate":
            bleu_sum += g.scores["bleu"] * g.examples
            bleu_n += g.examples
        elif g.group == "all":
            key = "rougeL" if g.task == "summarize" else "f1"
            scores[f"{g.task}_{key}"] = g.scores[key]
    if bleu_n:
        scores["translate_bleu"] = bleu_sum / bleu_n
    for t in report.teacher_forcing:
        scores[f"{t.task}_loss"] = t.loss
    primary = [v for k, v in scores.items() if not k.endswith("_loss")]
    return {"scores": scores, "score": sum(primary) / max(len(primary), 1),
            "examples": report.examples, "seconds": report.seconds}


def _final(run: Run, timings: dict[str, float], base: Base | None) -> Path | None:
    """Compare fine-tuned and adversarial models honestly; ship the better as OUT/final."""
    done = [s for s in MODEL_STAGES if stage_done(run, s)]
    if not done:
        return None
    chosen = done[-1]
    adversarial: dict[str, Any] | None = None
    if "adversarial" in done and "finetune" in done:
        before = _evaluate(run, run.out / "finetune")
        after = _evaluate(run, run.out / "adversarial")
        # The adversarial model must earn its place: a tie keeps the fine-tuned one.
        chosen = "adversarial" if after["score"] > before["score"] else "finetune"
        adversarial = {"before": before, "after": after, "kept": chosen,
                       "score": "mean of translate BLEU, summarize ROUGE-L, answer F1 "
                                "(validation split, greedy)"}
        log.info("adversarial stage: score %.2f -> %.2f; keeping %s", before["score"],
                 after["score"], chosen)
    r = run.recipe
    ckpt = load_checkpoint(run.out / chosen)
    data_manifest = None
    if (Path(r.data_dir) / "manifest.json").is_file():
        data_manifest = json.loads((Path(r.data_dir) / "manifest.json").read_text("utf-8"))
    stages_info = {}
    for s in done:
        m = json.loads((run.out / s / "manifest.json").read_text(encoding="utf-8"))
        stages_info[s] = m.get("training_stage")
    tok_info = run.out / "tokenizer" / "info.json"
    info = {
        **(base.lineage() if base is not None else {}),
        "name": r.name,
        "selected_stage": chosen,
        "recipe": r.to_dict(),
        "data": data_manifest,
        "tokenizer": json.loads(tok_info.read_text("utf-8")) if tok_info.is_file() else None,
        "stages": stages_info,
        "wall_seconds": timings,
        "validation": (stages_info.get(chosen) or {}).get("validation"),
        "adversarial": adversarial,
    }
    # The discriminator judges (source, output) pairs whichever generator is kept, so
    # final carries it even when the fine-tuned model wins: serving reranks by it.
    extra = {n: (run.out / "adversarial" / n).read_bytes()
             for n in (disc_lib.WEIGHTS_FILE, disc_lib.CONFIG_FILE)
             if "adversarial" in done and (run.out / "adversarial" / n).is_file()}
    extra.update(_extra_files(run, list(MODEL_STAGES)))
    path = save_checkpoint(run.out / "final", ckpt.model, ckpt.tokenizer, info=info,
                           extra_files=extra)
    if "loss.png" in extra:
        (run.out / "loss.png").write_bytes(extra["loss.png"])
    log.info("final checkpoint: %s (from %s)", path, chosen)
    return path


def _load_timings(run: Run) -> dict[str, float]:
    path = run.work / "timings.json"
    if path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        return {k: float(v) for k, v in data.items()}
    return {}


def _save_timings(run: Run, timings: dict[str, float]) -> None:
    if run.dist.is_main:
        run.work.mkdir(parents=True, exist_ok=True)
        (run.work / "timings.json").write_text(json.dumps(timings, indent=2) + "\n",
                                               encoding="utf-8")


def _run_tokenizer(run: Run, timings: dict[str, float]) -> SoraTokenizer:
    """The run's own tokenizer: trained by the tokenizer stage, or the one it left."""
    if "tokenizer" in run.stages and not stage_done(run, "tokenizer"):
        started = time.monotonic()
        if run.dist.is_main:
            train_tokenizer(run.recipe, run.out / "tokenizer")
        run.dist.barrier()
        timings["tokenizer"] = round(time.monotonic() - started, 1)
        _save_timings(run, timings)
    if not stage_done(run, "tokenizer"):
        raise RunError(f"{run.out / 'tokenizer'} is missing: include the tokenizer stage")
    return load_stage_tokenizer(run.out / "tokenizer")


def run_training(run: Run) -> Path | None:
    """Run (or resume) the recipe's stages; returns OUT/final when one was written."""
    for stage in run.stages:
        if stage not in STAGES:
            raise RecipeError([f"--stages: unknown stage {stage!r} (expected {', '.join(STAGES)})"])
    check_data(run.recipe, run.stages)
    base = load_base(run.recipe)
    if base is not None:
        skipped = [s for s in run.stages if s not in run_stages(run.recipe, run.stages)]
        if skipped:
            log.info("init_from %s: its tokenizer and weights replace the %s stage(s)",
                     base.path, ", ".join(skipped))
        run = replace(run, stages=run_stages(run.recipe, run.stages))
    _prepare_out(run)
    timings = _load_timings(run)
    tokenizer = base.tokenizer if base is not None else _run_tokenizer(run, timings)
    trained = False
    for stage in MODEL_STAGES:
        if stage not in run.stages or stage_done(run, stage):
            continue
        timings[stage] = _train_stage(run, stage, tokenizer, base)
        _save_timings(run, timings)
        trained = True
    final = None
    if run.dist.is_main and (trained or not (run.out / "final").is_dir()):
        started = time.monotonic()
        final = _final(run, timings, base)
        timings["final_eval"] = round(time.monotonic() - started, 1)
        _save_timings(run, timings)
    elif (run.out / "final").is_dir():
        final = run.out / "final"
    run.dist.barrier()
    return final
