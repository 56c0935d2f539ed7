"""``sora data ...``: build the Debian data set, or convert a user file to Sora JSONL.

Only argument handling lives here; the work is in ``build`` and ``formats``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from .build import BuildConfig, build_debian
from .debian import DEFAULT_LANGUAGES, fetch_lists
from .formats import load_examples
from .records import TASKS, write_jsonl

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data`` with its ``debian`` and ``convert`` subcommands to a CLI."""
    data = subparsers.add_parser("data", help="build or convert training data")
    commands = data.add_subparsers(dest="data_command", required=True)

    debian = commands.add_parser(
        "debian",
        help="build translate/summarize/answer data from Debian's package descriptions",
    )
    debian.add_argument("--out", type=Path, required=True, help="output folder (replaced)")
    debian.add_argument(
        "--lists", type=Path,
        help="apt lists folder with Translation-*/Packages files; fetched with apt-get "
        "when absent or empty (default: OUT.lists)",
    )  # fmt: skip
    defaults = BuildConfig()
    debian.add_argument("--valid-frac", type=float, default=defaults.valid_frac)
    debian.add_argument("--test-frac", type=float, default=defaults.test_frac)
    debian.add_argument("--seed", type=int, default=defaults.seed)
    debian.add_argument(
        "--pairs", default=",".join(defaults.pairs),
        help="DDTP languages paired with English, comma-separated",
    )  # fmt: skip
    debian.add_argument("--qa-per-package", type=int, default=defaults.qa_per_package)
    debian.set_defaults(func=run_debian)

    convert = commands.add_parser("convert", help="convert SQuAD/JSONL/TSV data to Sora JSONL")
    convert.add_argument("--input", type=Path, required=True)
    convert.add_argument("--out", type=Path, required=True, help="output .jsonl file")
    convert.add_argument("--task", choices=TASKS, help="needed when the shape is ambiguous")
    convert.add_argument("--src-lang", help="source language of parallel text")
    convert.add_argument("--tgt-lang", help="target language of parallel text")
    convert.add_argument(
        "--unanswerable", choices=("skip", "empty"), default="skip",
        help="SQuAD v2 questions without an answer: skip them or keep an empty answer",
    )  # fmt: skip
    convert.set_defaults(func=run_convert)

    sample = commands.add_parser(
        "sample", help="cut a small fixed evaluation split (per direction/template) from a build"
    )
    sample.add_argument("--data", type=Path, required=True, help="a `sora data debian` output")
    sample.add_argument("--out", type=Path, required=True)
    sample.add_argument("--split", default="test")
    sample.add_argument("--per-group", type=int, default=100)
    sample.add_argument("--min-per-task", type=int, default=300)
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(func=run_sample)


def run_debian(args: argparse.Namespace) -> int:
    """Fetch the lists if needed, then build; logs the per-task counts."""
    lists: Path = args.lists or args.out.with_name(args.out.name + ".lists")
    if not lists.is_dir() or not any(lists.iterdir()):
        fetch_lists(lists, DEFAULT_LANGUAGES)
    pairs = tuple(p.strip() for p in args.pairs.split(",") if p.strip())
    config = BuildConfig(
        valid_frac=args.valid_frac,
        test_frac=args.test_frac,
        seed=args.seed,
        pairs=pairs,
        languages=tuple(dict.fromkeys(("en", *pairs, *DEFAULT_LANGUAGES))),
        qa_per_package=args.qa_per_package,
    )
    started = time.monotonic()
    manifest = build_debian(lists, args.out, config)
    for task, splits in manifest["counts"].items():
        log.info("%s: %s", task, splits)
    log.info("wrote %s in %.0fs", args.out, time.monotonic() - started)
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """Convert one file; malformed input is reported as a one-line error, exit code 2."""
    try:
        records = load_examples(
            args.input, args.task, args.src_lang, args.tgt_lang, args.unanswerable
        )
    except (ValueError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    count = write_jsonl(tmp, records)
    tmp.replace(args.out)
    log.info("wrote %d records to %s", count, args.out)
    return 0


def run_sample(args: argparse.Namespace) -> int:
    from model.training.data.sample import sample_split

    if not args.data.is_dir():
        log.error("%s: not a data directory", args.data)
        return 2
    counts = sample_split(
        args.data, args.out, args.split, args.per_group, args.min_per_task, args.seed
    )
    for task, groups in counts.items():
        log.info("%s: %s", task, ", ".join(f"{g} {n}" for g, n in groups.items()))
    return 0
