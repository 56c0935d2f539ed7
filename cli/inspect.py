"""`sora inspect DIR`: a checkpoint's manifest as a readable table."""

from __future__ import annotations

import argparse
import json
import sys

from cli.common import DEFAULT_CHECKPOINT


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="verify a checkpoint and print its manifest")
    p.add_argument("checkpoint", nargs="?", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--json", action="store_true", help="print the raw manifest")
    p.set_defaults(func=run)


def _rows(prefix: str, value: object) -> list[tuple[str, str]]:
    if isinstance(value, dict) and value:
        out: list[tuple[str, str]] = []
        for k, v in value.items():
            out.extend(_rows(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    if isinstance(value, float):
        return [(prefix, f"{value:.4g}")]
    if isinstance(value, list):
        return [(prefix, ", ".join(map(str, value)))]
    return [(prefix, str(value))]


def run(args: argparse.Namespace) -> int:
    from model.checkpoint import CheckpointError, verify_checkpoint

    try:
        manifest = verify_checkpoint(args.checkpoint)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    rows = _rows("", manifest)
    width = max(len(k) for k, _ in rows)
    print(f"checkpoint {args.checkpoint}: verified (every sha256 matches)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return 0
