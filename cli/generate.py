"""`sora generate`: run one task on texts from the command line or stdin."""

from __future__ import annotations

import argparse
import sys

from cli.common import DEFAULT_CHECKPOINT, add_decoding_args, decoding_kwargs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="translate, summarize or answer from the command line")
    p.add_argument("text", nargs="*", help="input texts (default: one per line from stdin)")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--task", choices=["translate", "summarize", "answer"], default="translate")
    p.add_argument("--target-lang", default=None, help="translate: target language code")
    p.add_argument("--source-lang", default=None,
                   help="translate: source language code, for models that need it (T5)")
    p.add_argument("--context", default=None, help="answer: the passage to answer from")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--quantize", action="store_true", help="int8 dynamic quantization (CPU)")
    p.add_argument("--compile", choices=["wait", "off", "on", "auto"], default="off",
                   help="wait: encoder and decode steps through torch.compile, compiled "
                   "first: pays off for many or long inputs, after 30-90 s of compiling "
                   "(default off). on: deprecated name of wait; auto: wait where it applies "
                   "(CPU fp32 with a C++ compiler)")
    p.add_argument("--verbose", action="store_true", help="also print finish reason and score")
    add_decoding_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.checkpoint import CheckpointError, load_checkpoint
    from model.device import compile_mode, compile_skipped, prepare_for_inference, resolve_device
    from model.generation import generate
    from model.sampling import DecodingParams
    from model.tokenizer import TokenizerError

    texts = args.text or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        print("error: no input text", file=sys.stderr)
        return 2
    if args.task == "translate" and not args.target_lang:
        print("error: --target-lang is required for translate", file=sys.stderr)
        return 2
    try:
        params = DecodingParams(**decoding_kwargs(args))  # type: ignore[arg-type]
        device, dtype = resolve_device(args.device, args.dtype)
        ckpt = load_checkpoint(args.checkpoint, device, dtype)
        sources = [
            ckpt.tokenizer.source_ids(args.task, t, args.target_lang, args.context,
                                      args.source_lang)
            for t in texts
        ]
        # NLLB/M2M100: the target language's code is the first output token.
        forced = [ckpt.tokenizer.forced_ids(args.task, args.target_lang)] * len(texts)
        mode = compile_mode(args.compile)
        if mode == "background":  # nothing runs after generating: compile first or never
            mode = "off" if compile_skipped(device, dtype, args.quantize) else "wait"
        model = prepare_for_inference(ckpt.model, quantize=args.quantize, compile=mode)
    except (ValueError, CheckpointError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in generate(model, ckpt.tokenizer, sources, params, forced):
        if args.verbose:
            print(f"{r.text}\t[{r.finish_reason}, logprob {r.logprob:.3f}]")
        else:
            print(r.text)
    return 0
