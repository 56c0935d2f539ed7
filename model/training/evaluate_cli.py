"""`sora eval`: score a checkpoint on held-out data and compare with trivial baselines.

    sora eval --checkpoint checkpoints/run1 --data data/debian --split test \
        --max-examples 500 --out results.json --record

DATA is a directory of `{task}.{split}.jsonl` files (as `sora data build` writes them)
or a single JSONL file of records of any tasks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cli.common import DEFAULT_CHECKPOINT
from model.training.data.records import SPLITS, TASKS, Record, read_jsonl


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint against baselines on held-out data")
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT), help="checkpoint directory")
    p.add_argument("--data", required=True,
                   help="directory of {task}.{split}.jsonl files, or one JSONL file")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="split to read from a data directory (default test)")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS),
                   help="tasks to evaluate (default all)")
    p.add_argument("--max-examples", type=int, default=None, metavar="N",
                   help="at most N examples per task, spread over directions/templates")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--beam-size", type=int, default=1, help="1 = greedy (default)")
    p.add_argument("--rerank", action="store_true",
                   help="output the checkpoint's discriminator's favourite of the beam's "
                   "n best (all --beam-size of them; needs --beam-size > 1)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--out", default=None, help="write the report as JSON to this file")
    p.add_argument("--record", action="store_true",
                   help="store the report under 'evaluation' in the checkpoint's manifest")
    p.set_defaults(func=run)


def load_records(data: str | Path, split: str, tasks: list[str] | tuple[str, ...]) -> list[Record]:
    """Records of `tasks` from a data directory (`{task}.{split}.jsonl`) or one JSONL file.
    Raises FileNotFoundError when nothing matching is there."""
    data = Path(data)
    if data.is_dir():
        files = [data / f"{task}.{split}.jsonl" for task in tasks]
        present = [f for f in files if f.is_file()]
        if not present:
            raise FileNotFoundError(
                f"{data}: none of {', '.join(f.name for f in files)} found"
            )
        return [r for f in present for r in read_jsonl(f)]
    if not data.is_file():
        raise FileNotFoundError(f"{data}: no such file or directory")
    return [r for r in read_jsonl(data) if r.task in tasks]


def run(args: argparse.Namespace) -> int:
    from model.checkpoint import CheckpointError, load_checkpoint
    from model.device import resolve_device
    from model.discriminator import has_discriminator, load_discriminator
    from model.sampling import DecodingParams
    from model.tokenizer import TokenizerError
    from model.training.evaluate import evaluate, format_table, record_in_manifest

    try:
        records = load_records(args.data, args.split, args.tasks)
        if not records:
            raise ValueError(f"{args.data}: no records of tasks {', '.join(args.tasks)}")
        if args.max_examples is not None and args.max_examples < 1:
            raise ValueError("--max-examples must be >= 1")
        if args.rerank and args.beam_size < 2:
            raise ValueError("--rerank needs --beam-size > 1 (the n best it reorders)")
        params = DecodingParams(
            strategy="beam" if args.beam_size > 1 else "greedy",
            beam_size=max(args.beam_size, 1),
            max_new_tokens=args.max_new_tokens,
            num_return_sequences=args.beam_size if args.rerank else 1,
            rerank=args.rerank,
        )
        device, dtype = resolve_device(args.device, args.dtype)
        ckpt = load_checkpoint(args.checkpoint, device, dtype)
        disc = None
        if args.rerank:
            if not has_discriminator(ckpt.manifest):
                raise ValueError(f"{args.checkpoint}: --rerank needs a discriminator, and "
                                 "this checkpoint carries none")
            disc = load_discriminator(args.checkpoint, device, dtype, manifest=ckpt.manifest)
        report = evaluate(
            ckpt,
            records,
            batch_size=args.batch_size,
            params=params,
            max_examples=args.max_examples,
            progress=lambda msg: print(msg, file=sys.stderr),
            discriminator=disc,
        )
    except (OSError, ValueError, CheckpointError, TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(report))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n",
                       encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    if args.record:
        try:
            path = record_in_manifest(args.checkpoint, report)
        except (OSError, CheckpointError) as e:
            print(f"error: could not record the evaluation: {e}", file=sys.stderr)
            return 1
        print(f"recorded in {path}", file=sys.stderr)
    return 0
