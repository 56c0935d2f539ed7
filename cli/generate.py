"""`sora generate`: run one task on texts from the command line or stdin."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING

from cli.common import DEFAULT_CHECKPOINT, add_decoding_args, decoding_kwargs

if TYPE_CHECKING:
    from model.checkpoint import Checkpoint

log = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="translate, summarize or answer from the command line")
    p.add_argument("text", nargs="*", help="input texts (default: one per line from stdin)")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--task", choices=["translate", "summarize", "answer"], default="translate")
    p.add_argument("--target-lang", default=None, help="translate: target language code")
    p.add_argument("--source-lang", default=None,
                   help="translate: source language code, for models that put it in their "
                   "input (NLLB, M2M100, mBART, T5; default: the only source of the target's "
                   "pairs, else detected from each text)")
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
            ckpt.tokenizer.source_ids(args.task, t, args.target_lang, args.context, lang)
            for t, lang in zip(texts, source_langs(ckpt, texts, args), strict=True)
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


def source_langs(ckpt: Checkpoint, texts: list[str], args: argparse.Namespace) -> list[str | None]:
    """Each text's source language: the one given, else, where the model puts it into
    its input (NLLB's source code), detected from the text over the model's languages,
    as the server's REST and gRPC front ends do. Without py3langid (the serve extra)
    it must be given: left out, the model would translate without it, silently worse."""
    prompting = ckpt.tokenizer.prompting
    if args.source_lang or args.task != "translate" or \
            not prompting.needs_source(args.task, args.target_lang):
        return [args.source_lang] * len(texts)
    languages = tuple(ckpt.manifest.get("languages") or ())
    try:
        from service.langdetect import detector_for

        detector = detector_for(languages)
    except ImportError:
        raise ValueError("--source-lang is required for this model: it reads "
                         f"{', '.join(languages)} (or pip install 'sora[serve]' to detect "
                         "it from the text)") from None
    langs: list[str | None] = []
    for text in texts:
        found = detector.detect(text, 1)[0]  # UnservedLanguage (a ValueError): refused
        log.info("detected source language %s (confidence %.2f)", found.language,
                 found.confidence)
        langs.append(found.language)
    return langs
