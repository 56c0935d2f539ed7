"""`sora train RECIPE.yaml`: run or resume a training recipe.

    sora train model/training/recipes/default.yaml --data DATA --out runs/default
    sora train default --resume --out runs/default          # continue after a crash
    rm -r runs/default/{finetune,adversarial,final,.work/adversarial}
    sora train default --resume --out runs/default --set finetune.max_steps=6000
                                                   # train a finished stage for longer
    sora train tiny --set finetune.max_steps=20 --stages tokenizer,pretrain,finetune
    torchrun --nproc_per_node=2 -m cli.main train tiny ...  # DistributedDataParallel

This is the only training module that reads the environment (torchrun's RANK,
WORLD_SIZE, LOCAL_RANK) and the only one that draws a progress bar.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from model.training.recipe import STAGES, RecipeError, load_recipe, parse_value

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train", help="train a model from a recipe (tokenizer, pretrain, finetune, adversarial)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", help="recipe YAML file, or the name of a shipped one "
                                  "(tiny, default, base)")
    p.add_argument("--data", help="data directory (overrides the recipe's data_dir)")
    p.add_argument("--out", help="output directory (overrides the recipe's out_dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out: finished stages are kept, the current one "
                        "resumes from its last saved state")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated stages to run (default {','.join(STAGES)})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set finetune.lr=3e-4 (repeatable)")
    p.add_argument("--max-steps", type=int,
                   help="cap every training stage at this many steps (smoke tests)")
    p.add_argument("--device", help="override the recipe's device (auto, cpu, cuda, cuda:N)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecipeError([f"--set {item!r}: expected KEY=VALUE"], "--set")
        out[key.strip()] = parse_value(value)
    if args.data:
        out["data_dir"] = args.data
    if args.out:
        out["out_dir"] = args.out
    if args.device:
        out["device"] = args.device
    if args.max_steps is not None:
        for stage in ("pretrain", "finetune", "adversarial"):
            out[f"{stage}.max_steps"] = args.max_steps
    return out


class _ProgressBar:
    """One tqdm bar per stage: loss, tokens/s and the ETA to max_steps."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.stage = ""

    def __call__(self, p: Any) -> None:
        from tqdm import tqdm

        if self.bar is None or p.stage != self.stage:
            self.close()
            self.stage = p.stage
            self.bar = tqdm(total=p.max_steps or None, initial=max(p.step - 1, 0),
                            desc=p.stage, unit="step", dynamic_ncols=True)
        self.bar.update(p.step - self.bar.n)
        self.bar.set_postfix(loss=f"{p.loss:.3f}", tok_s=f"{p.tokens_per_s:,.0f}",
                             lr=f"{p.lr:.2e}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _ProgressLog:
    """Without a terminal (a background run): one log line a minute, with the ETA."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self.last = -1e9
        self.stage = ""

    def __call__(self, p: Any) -> None:
        if p.stage != self.stage:  # each stage's clock starts at zero
            self.stage, self.last = p.stage, -1e9
        if p.elapsed_s - self.last < self.every_s and p.step != p.max_steps:
            return
        self.last = p.elapsed_s
        eta = ""
        if p.max_steps and p.step:
            left = (p.max_steps - p.step) * p.elapsed_s / p.step
            eta = f", ETA {left / 60:.0f} min (step cap; max_minutes may stop it sooner)"
        log.info("%s step %d/%s loss %.3f, %.0f tok/s, lr %.2e, %.1f min%s", p.stage, p.step,
                 p.max_steps or "?", p.loss, p.tokens_per_s, p.lr, p.elapsed_s / 60, eta)


def run(args: argparse.Namespace) -> int:
    from model.training.distributed import init_distributed, shutdown
    from model.training.pipeline import Run, RunError, run_training

    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    try:
        recipe = load_recipe(args.recipe, _overrides(args))
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise RecipeError([f"--stages: unknown stage(s) {', '.join(bad)} "
                               f"(expected {', '.join(STAGES)})"], "--stages")
        from model.training.recipe import check_data

        check_data(recipe, stages)
    except RecipeError as e:
        print(f"sora train: {e}", file=sys.stderr)
        return 2
    # torchrun sets these; a plain `sora train` is a world of one.
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    ctx = init_distributed(rank, world, local, recipe.device)
    bar = _ProgressBar() if rank == 0 and not args.no_progress and sys.stderr.isatty() else None
    try:
        if bar is not None:
            from tqdm.contrib.logging import logging_redirect_tqdm

            with logging_redirect_tqdm():
                final = run_training(Run(recipe, stages, ctx, args.resume, bar))
        else:
            progress = _ProgressLog() if rank == 0 and not args.no_progress else None
            final = run_training(Run(recipe, stages, ctx, args.resume, progress))
    except (RunError, RecipeError) as e:
        print(f"sora train: {e}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
        shutdown(ctx)
    if final is not None and rank == 0:
        log.info("done: %s", final)
    return 0
