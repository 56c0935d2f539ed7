"""`sora import hf SRC --out DIR`: a Hugging Face save_pretrained directory, or a hub id
downloaded first (model.hf.hub, the `hub` extra), as a Sora checkpoint
(model.hf.importer). It needs what serving needs (torch, safetensors, tokenizers):
Marian's .spm files are read without sentencepiece."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _pair(text: str) -> list[str]:
    parts = text.split("-")
    if len(parts) != 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"expected SRC-TGT (e.g. en-de), got {text!r}")
    return parts


def _mapping(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not (sep and key and value):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="import a model from another format into a checkpoint")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    hf = kinds.add_parser("hf", help="a Hugging Face save_pretrained directory (Marian/OPUS-MT, "
                          "BART, T5/Flan-T5/mT5)")
    hf.add_argument("src", help="the save_pretrained directory (config.json, *.safetensors, "
                    "tokenizer files), or a Hugging Face hub id to download them from "
                    "(e.g. Helsinki-NLP/opus-mt-en-de; pip install 'sora[hub]')")
    hf.add_argument("--revision", default=None,
                    help="hub id only: the branch, tag or commit to download (default main)")
    hf.add_argument("--out", required=True, help="checkpoint directory to write (replaced)")
    hf.add_argument("--allow-pickle", action="store_true",
                    help="read pytorch_model.bin when there is no *.safetensors "
                    "(torch.load with weights_only=True); from the hub, download it then")
    hf.add_argument("--pair", type=_pair, action="append", default=None, metavar="SRC-TGT",
                    help="a language pair the model translates (ISO 639-1; repeat for more); "
                    "replaces the pairs the importer infers")
    hf.add_argument("--languages", default=None,
                    help="comma-separated ISO 639-1 codes of the text it reads (default: "
                    "those of its pairs, else en)")
    hf.add_argument("--tasks", default=None,
                    help="comma-separated tasks it serves (default: those it has templates for)")
    hf.add_argument("--template", type=_mapping, action="append", default=[],
                    metavar="TASK=TEXT", help="how TASK becomes input text, with {text}, "
                    "{context}, {source}, {target} (e.g. 'summarize=summarize: {text}')")
    hf.add_argument("--target-token", type=_mapping, action="append", default=[],
                    metavar="LANG=TOKEN", help="the token put first to ask for LANG "
                    "(multilingual OPUS-MT, e.g. 'fr=>>fra<<')")
    hf.add_argument("--name", default=None, help="the model's name in the manifest")
    hf.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    hf.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.checkpoint import CheckpointError
    from model.hf.families import HFImportError
    from model.hf.hub import download
    from model.hf.importer import Overrides, import_hf

    overrides = Overrides(
        tasks=args.tasks.split(",") if args.tasks else None,
        pairs=args.pair,
        languages=args.languages.split(",") if args.languages else None,
        templates=dict(args.template),
        target_tokens=dict(args.target_token),
        name=args.name,
    )
    try:
        hub = None
        src = Path(args.src)
        if not src.is_dir():
            hub = download(args.src, args.revision, allow_pickle=args.allow_pickle)
            src = hub.path
        elif args.revision:
            raise HFImportError(f"{src} is a local directory: --revision is for a hub id")
        out = import_hf(src, args.out, allow_pickle=args.allow_pickle,
                        overrides=overrides, dtype=args.dtype, hub=hub)
    except (HFImportError, CheckpointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0
