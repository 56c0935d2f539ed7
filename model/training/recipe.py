"""Training recipes: every hyper-parameter of a run, read from YAML into dataclasses.

A recipe is checked completely before any compute starts: unknown keys, values of the
wrong type or range and missing data files are collected and reported together in one
`RecipeError`, each problem named by its dotted key (`finetune.mixture.translate`).

    name / seed / data_dir / out_dir / device / precision / max_*_len
    model:        the Transformer's shape (SoraConfig minus the token ids)
    init_from:    a checkpoint to fine-tune (its tokenizer and shape are kept; the
                  tokenizer and pretrain stages are then left out)
    tokenizer:    byte-level BPE training
    pretrain:     denoising (T5 span corruption) on monolingual text
    finetune:     multi-task training with mixture weights
    adversarial:  discriminator + policy-gradient fine-tuning
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from model.config import ACTIVATIONS

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
STAGES = ("tokenizer", "pretrain", "finetune", "adversarial")
TASKS = ("translate", "summarize", "answer")
Schedule = Literal["inverse_sqrt", "cosine", "linear", "constant"]
Precision = Literal["auto", "fp32", "bf16"]
Select = Literal["valid_loss", "bleu", "last"]


class RecipeError(ValueError):
    """A recipe that cannot run; the message lists every problem found."""

    def __init__(self, problems: list[str], source: str = "recipe") -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s):\n{lines}")


@dataclass(frozen=True)
class ModelRecipe:
    d_model: int = 256
    n_heads: int = 4
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3
    d_ff: int = 1024
    dropout: float = 0.1
    activation: str = "gelu"
    tie_embeddings: bool = True


@dataclass(frozen=True)
class TokenizerRecipe:
    vocab_size: int = 8000
    min_frequency: int = 2
    # Training text is read in data order until this many characters: BPE merges
    # converge long before the whole corpus, and the trainer's memory grows with it.
    max_chars: int = 30_000_000


@dataclass(frozen=True)
class StageRecipe:
    """The optimisation loop shared by every training stage."""

    max_steps: int = 1000  # optimizer steps; 0 = no limit (then max_epochs must be set)
    max_epochs: int = 0  # passes over the stage's data; 0 = no limit
    # Wall-clock cap on the stage's loop (0 = off): a guard for fixed time budgets. The
    # stop is saved like any other, so resuming after it stays exact.
    max_minutes: float = 0.0
    batch_tokens: int = 4096  # padded source+target tokens per micro-batch, all ranks together
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 5e-4
    schedule: Schedule = "inverse_sqrt"
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0  # cosine/linear decay floor, as a fraction of lr
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    label_smoothing: float = 0.0
    log_interval: int = 10  # steps between metrics.jsonl train lines
    valid_interval: int = 200  # steps between validations (and at the end)
    save_interval: int = 100  # steps between resumable training-state saves
    valid_examples: int = 400  # held-out examples per task for validation loss
    bleu_examples: int = 0  # translate examples decoded for a quick BLEU at validation
    patience: int = 0  # validations without improvement before stopping; 0 = off
    select: Select = "valid_loss"  # which validation picks the stage's checkpoint


@dataclass(frozen=True)
class PretrainRecipe(StageRecipe):
    noise_density: float = 0.15  # fraction of tokens masked (T5 span corruption)
    mean_span_length: float = 3.0


@dataclass(frozen=True)
class FinetuneRecipe(StageRecipe):
    # Relative sampling weights of the tasks; an epoch keeps the total example count
    # and re-samples each task to its share (up- or down-sampling).
    mixture: dict[str, float] = field(
        default_factory=lambda: {"translate": 0.5, "summarize": 0.2, "answer": 0.3}
    )


@dataclass(frozen=True)
class AdversarialRecipe(FinetuneRecipe):
    mle_weight: float = 1.0  # likelihood loss on references keeps the generator grounded
    pg_weight: float = 0.5  # policy-gradient loss weight (reward from the discriminator)
    baseline_decay: float = 0.9  # moving-average reward baseline
    sample_temperature: float = 1.0
    sample_top_k: int = 50
    disc_lr: float = 1e-4
    disc_steps: int = 1  # discriminator updates per generator step
    disc_warmup_steps: int = 50  # discriminator-only steps before the generator moves
    disc_hidden: int = 256
    eval_examples: int = 200  # per task, for the honest before/after report


@dataclass(frozen=True)
class Recipe:
    name: str
    seed: int = 1234
    data_dir: str = "data"
    out_dir: str = "runs/run"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Precision = "auto"  # auto: bf16 autocast where bf16 is native (CUDA, AMX CPUs)
    max_source_len: int = 128
    max_target_len: int = 128
    # A checkpoint directory to start from ("" = train from scratch). Its tokenizer and
    # architecture are kept (of `model`, only dropout applies); the tokenizer and
    # pretrain stages are not run.
    init_from: str = ""
    model: ModelRecipe = field(default_factory=ModelRecipe)
    tokenizer: TokenizerRecipe = field(default_factory=TokenizerRecipe)
    pretrain: PretrainRecipe = field(default_factory=PretrainRecipe)
    finetune: FinetuneRecipe = field(default_factory=FinetuneRecipe)
    adversarial: AdversarialRecipe = field(default_factory=AdversarialRecipe)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for stage in ("pretrain", "finetune", "adversarial"):
            data[stage]["betas"] = list(data[stage]["betas"])
        return data

    def stage(self, name: str) -> StageRecipe:
        value = getattr(self, name)
        assert isinstance(value, StageRecipe)
        return value


# -- parsing -----------------------------------------------------------------------------


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _convert(value: Any, hint: Any, key: str, problems: list[str]) -> Any:
    """`value` checked against the type `hint`; problems are appended, not raised."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping, got {_describe(value)}")
            return None
        return _build(hint, value, key, problems)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            problems.append(f"{key}: expected one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        return _convert(value, typing.get_args(hint)[0], key, problems)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            problems.append(f"{key}: expected a list of {len(args)} numbers, got {value!r}")
            return None
        return tuple(_convert(v, a, f"{key}[{i}]", problems) for i, (v, a) in enumerate(
            zip(value, args, strict=True)))
    if origin is dict:
        _, value_type = typing.get_args(hint)
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping, got {_describe(value)}")
            return None
        return {str(k): _convert(v, value_type, f"{key}.{k}", problems) for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            problems.append(f"{key}: expected true/false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{key}: expected an integer, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{key}: expected a number, got {_describe(value)}")
            return value
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            problems.append(f"{key}: expected a string, got {_describe(value)}")
        return value
    raise TypeError(f"recipe field {key} has an unsupported type {hint!r}")


def _build(cls: type, data: dict[str, Any], prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    for k in sorted(set(data) - set(known), key=str):
        problems.append(f"{prefix}{'.' if prefix else ''}{k}: unknown key")
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{key}: missing")
            continue
        kwargs[name] = _convert(data[name], hints[name], key, problems)
    if problems:
        return None
    return cls(**kwargs)


def _check_stage(key: str, s: StageRecipe, problems: list[str]) -> None:
    def need(ok: bool, what: str) -> None:
        if not ok:
            problems.append(f"{key}.{what}")

    need(s.max_steps >= 0, f"max_steps: must be >= 0, got {s.max_steps}")
    need(s.max_epochs >= 0, f"max_epochs: must be >= 0, got {s.max_epochs}")
    need(s.max_minutes >= 0, f"max_minutes: must be >= 0, got {s.max_minutes}")
    need(s.max_steps > 0 or s.max_epochs > 0, "max_steps: max_steps or max_epochs must be > 0")
    need(s.batch_tokens >= 64, f"batch_tokens: must be >= 64, got {s.batch_tokens}")
    need(s.grad_accum >= 1, f"grad_accum: must be >= 1, got {s.grad_accum}")
    need(s.lr > 0, f"lr: must be > 0, got {s.lr}")
    need(s.warmup_steps >= 0, f"warmup_steps: must be >= 0, got {s.warmup_steps}")
    need(0 <= s.min_lr_ratio <= 1, f"min_lr_ratio: must be in [0, 1], got {s.min_lr_ratio}")
    need(s.weight_decay >= 0, f"weight_decay: must be >= 0, got {s.weight_decay}")
    need(all(0 <= b < 1 for b in s.betas), f"betas: must be in [0, 1), got {list(s.betas)}")
    need(s.eps > 0, f"eps: must be > 0, got {s.eps}")
    need(s.grad_clip >= 0, f"grad_clip: must be >= 0, got {s.grad_clip}")
    need(0 <= s.label_smoothing < 1, f"label_smoothing: must be in [0, 1), got {s.label_smoothing}")
    for name in ("log_interval", "valid_interval", "save_interval", "valid_examples"):
        need(getattr(s, name) >= 1, f"{name}: must be >= 1, got {getattr(s, name)}")
    need(s.bleu_examples >= 0, f"bleu_examples: must be >= 0, got {s.bleu_examples}")
    need(s.patience >= 0, f"patience: must be >= 0, got {s.patience}")
    need(s.select != "bleu" or s.bleu_examples > 0, "select: bleu needs bleu_examples > 0")
    need(s.select != "bleu" or not isinstance(s, PretrainRecipe),
         "select: pre-training cannot select by BLEU (it does not translate yet)")
    if isinstance(s, PretrainRecipe):
        need(0 < s.noise_density < 1, f"noise_density: must be in (0, 1), got {s.noise_density}")
        need(s.mean_span_length >= 1, f"mean_span_length: must be >= 1, got {s.mean_span_length}")
    if isinstance(s, FinetuneRecipe):
        for task in s.mixture:
            need(task in TASKS, f"mixture.{task}: unknown task (expected {', '.join(TASKS)})")
        need(all(w >= 0 for w in s.mixture.values()), "mixture: weights must be >= 0")
        need(sum(s.mixture.values()) > 0, "mixture: at least one weight must be > 0")
    if isinstance(s, AdversarialRecipe):
        need(s.mle_weight >= 0 and s.pg_weight >= 0, "mle_weight/pg_weight: must be >= 0")
        need(0 <= s.baseline_decay < 1,
             f"baseline_decay: must be in [0, 1), got {s.baseline_decay}")
        need(s.sample_temperature > 0, "sample_temperature: must be > 0")
        need(s.sample_top_k >= 0, "sample_top_k: must be >= 0")
        need(s.disc_lr > 0, "disc_lr: must be > 0")
        need(s.disc_steps >= 1, "disc_steps: must be >= 1")
        need(s.disc_warmup_steps >= 0, "disc_warmup_steps: must be >= 0")
        need(s.disc_hidden >= 1, "disc_hidden: must be >= 1")
        need(s.eval_examples >= 0, "eval_examples: must be >= 0")


def _check(r: Recipe, problems: list[str]) -> None:
    m = r.model
    for name in ("d_model", "n_heads", "n_encoder_layers", "n_decoder_layers", "d_ff"):
        if getattr(m, name) < 1:
            problems.append(f"model.{name}: must be >= 1, got {getattr(m, name)}")
    if m.n_heads >= 1 and m.d_model % m.n_heads:
        problems.append(f"model.d_model: {m.d_model} is not divisible by n_heads {m.n_heads}")
    if not 0 <= m.dropout < 1:
        problems.append(f"model.dropout: must be in [0, 1), got {m.dropout}")
    if m.activation not in ACTIVATIONS:
        problems.append(f"model.activation: must be one of {', '.join(ACTIVATIONS)}")
    if r.tokenizer.vocab_size < 300:
        problems.append("tokenizer.vocab_size: must be >= 300 (256 bytes + special tokens)")
    if r.tokenizer.max_chars < 1000:
        problems.append("tokenizer.max_chars: must be >= 1000")
    if r.tokenizer.min_frequency < 1:
        problems.append("tokenizer.min_frequency: must be >= 1")
    for name in ("max_source_len", "max_target_len"):
        if not 8 <= getattr(r, name) <= 4096:
            problems.append(f"{name}: must be in [8, 4096], got {getattr(r, name)}")
    if not (r.device in ("auto", "cpu", "cuda") or r.device.startswith("cuda:")):
        problems.append(f"device: expected auto, cpu, cuda or cuda:N, got {r.device!r}")
    for stage in ("pretrain", "finetune", "adversarial"):
        _check_stage(stage, r.stage(stage), problems)


def parse_value(text: str) -> Any:
    """A `--set` value: YAML scalar/list syntax (`3`, `1e-4`, `true`, `[0.9, 0.98]`)."""
    return yaml.safe_load(text)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of raw recipe `data` with dotted-key overrides applied."""
    data = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError([f"{dotted}: {part} is not a mapping"], "--set")
            node = child
        node[parts[-1]] = value
    return data


def recipe_from_dict(data: Any, source: str = "recipe") -> Recipe:
    problems: list[str] = []
    if not isinstance(data, dict):
        raise RecipeError([f"expected a mapping at the top level, got {_describe(data)}"], source)
    recipe = _build(Recipe, data, "", problems)
    if recipe is not None:
        _check(recipe, problems)
    if problems:
        raise RecipeError(problems, source)
    assert isinstance(recipe, Recipe)
    return recipe


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and fully validate a YAML recipe (with optional dotted-key overrides)."""
    path = Path(path)
    if not path.is_file() and (RECIPES_DIR / f"{path}.yaml").is_file():
        path = RECIPES_DIR / f"{path}.yaml"  # `sora train default` finds the shipped one
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RecipeError([f"cannot read: {e.strerror}"], str(path)) from e
    except yaml.YAMLError as e:
        raise RecipeError([f"invalid YAML: {e}"], str(path)) from e
    return recipe_from_dict(apply_overrides(data or {}, overrides or {}), str(path))


# -- data files --------------------------------------------------------------------------


def required_data_files(recipe: Recipe, stages: tuple[str, ...]) -> list[str]:
    """Names of the files in the data directory that `stages` read."""
    names: list[str] = []
    if "tokenizer" in stages or "pretrain" in stages:
        names.append("monolingual.train.txt")
    for stage in ("finetune", "adversarial"):
        if stage in stages or (stage == "finetune" and "tokenizer" in stages):
            mixture = getattr(recipe, stage).mixture
            for task, weight in mixture.items():
                if weight > 0:
                    names += [f"{task}.train.jsonl", f"{task}.valid.jsonl"]
    if "pretrain" in stages:
        names.append("translate.valid.jsonl")  # held-out text for denoising validation
    return list(dict.fromkeys(names))


def run_stages(recipe: Recipe, stages: tuple[str, ...]) -> tuple[str, ...]:
    """The stages a run trains: with `init_from` the checkpoint already provides the
    tokenizer and the pre-trained model, so those two are left out."""
    if recipe.init_from:
        return tuple(s for s in stages if s not in ("tokenizer", "pretrain"))
    return stages


def check_data(recipe: Recipe, stages: tuple[str, ...]) -> None:
    """Raise one RecipeError listing every data file the stages need but cannot read
    (and an `init_from` that is not a checkpoint directory)."""
    problems = []
    if recipe.init_from and not (Path(recipe.init_from) / "manifest.json").is_file():
        problems.append(f"init_from: {recipe.init_from} is not a checkpoint directory "
                        "(no manifest.json)")
    data = Path(recipe.data_dir)
    if not data.is_dir():
        raise RecipeError([*problems, f"data_dir: {data} is not a directory"])
    problems += [
        f"data_dir: missing {data / n}"
        for n in required_data_files(recipe, run_stages(recipe, stages))
        if not (data / n).is_file() or (data / n).stat().st_size == 0
    ]
    if problems:
        raise RecipeError(problems)


def shipped_recipes() -> list[Path]:
    return sorted(RECIPES_DIR.glob("*.yaml"))
