"""`sora` entry point: one subcommand module per area, imported only when used, so
`sora serve` never loads training code and `sora generate` never loads the server."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# subcommand -> module providing add_parser(subparsers)
COMMANDS = {
    "generate": "cli.generate",
    "inspect": "cli.inspect",
    "serve": "cli.serve",
    "bench": "cli.bench",
    "import": "cli.import_hf",
    "data": "model.training.data.cli",
    "train": "model.training.cli",
    "eval": "model.training.evaluate_cli",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sora", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = [a for a in argv if a in COMMANDS][:1] or list(COMMANDS)
    for name in COMMANDS:
        if name not in wanted:
            sub.add_parser(name, help=f"(run 'sora {name} -h')")
            continue
        try:
            module = importlib.import_module(COMMANDS[name])
        except ImportError as e:
            sub.add_parser(name, help=f"unavailable: {e}")
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    # Benchmarks that keep their own option parser take the arguments we do not know.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    func = getattr(args, "func", None)
    if func is None:
        parser.error(f"'{args.command}' is not available in this installation")
    return int(func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
