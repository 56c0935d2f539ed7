"""Helpers shared by CLI subcommands."""

from __future__ import annotations

import argparse

from model.checkpoint import DEFAULT_CHECKPOINT

__all__ = ["DEFAULT_CHECKPOINT", "add_decoding_args", "decoding_kwargs"]


def add_decoding_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding")
    g.add_argument("--strategy", choices=["greedy", "sample", "beam"], default="greedy")
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--min-new-tokens", type=int, default=0)
    g.add_argument("--temperature", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=0)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--beam-size", type=int, default=4)
    g.add_argument("--length-penalty", type=float, default=1.0)
    g.add_argument("--no-early-stopping", dest="early_stopping", action="store_false")
    g.add_argument("--ignore-eos", action="store_true")
    g.add_argument("--no-repeat-ngram-size", type=int, default=0)


def decoding_kwargs(args: argparse.Namespace) -> dict[str, object]:
    return {
        "strategy": args.strategy,
        "max_new_tokens": args.max_new_tokens,
        "min_new_tokens": args.min_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "seed": args.seed,
        "beam_size": args.beam_size,
        "length_penalty": args.length_penalty,
        "early_stopping": args.early_stopping,
        "ignore_eos": args.ignore_eos,
        "no_repeat_ngram_size": args.no_repeat_ngram_size,
    }
