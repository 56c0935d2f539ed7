"""`sora bench TARGET`: throughput benchmarks (not tests). Each target is a subcommand:
`model` times greedy generation of a random-weight model; serving targets (engine,
http, ...) add their own."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="throughput benchmarks (model, ...)")
    targets = p.add_subparsers(dest="target", required=True, metavar="TARGET")

    m = targets.add_parser("model", help="greedy generation speed of a random-weight model")
    m.add_argument("--batch-sizes", type=_int_list, default=[1, 16, 64],
                   help="comma-separated (default 1,16,64)")
    m.add_argument("--shape", default="small", help="small (default) or base")
    m.add_argument("--num-sources", type=int, default=256)
    m.add_argument("--new-tokens", type=int, default=32, help="generated per source (exactly)")
    m.add_argument("--repeats", type=int, default=3, help="timed passes; the median is shown")
    m.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--precisions", default="float32,float32-compiled",
                   help="comma-separated: float32 (eager), float32-compiled (what `sora "
                   "serve` runs on CPU once compiled; compiles first), bfloat16 (fast on "
                   "CPUs with AMX), int8")
    m.set_defaults(func=run_model)

    # Serving benchmarks keep their own options: `sora bench engine -h` lists them.
    passthrough = {
        "engine": ("benchmarks.engine_bench", [], "continuous batching vs one-at-a-time"),
        "http": ("benchmarks.load", ["--protocol", "http"], "HTTP load at 1/16/64 clients"),
        "grpc": ("benchmarks.load", ["--protocol", "grpc"], "gRPC load at 1/16/64 clients"),
    }
    for name, (module, preset, text) in passthrough.items():
        t = targets.add_parser(name, help=text, add_help=False)
        t.set_defaults(func=_passthrough(module, preset), passthrough=True)


def _passthrough(module: str, preset: list[str]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(module).main([*preset, *args.extra]) or 0)

    return run


def run_model(args: argparse.Namespace) -> int:
    import torch

    from benchmarks import model_bench as mb

    if args.shape not in mb.SHAPES:
        print(f"error: --shape must be one of {', '.join(mb.SHAPES)}", file=sys.stderr)
        return 2
    try:
        precisions = mb.parse_precisions(args.precisions)
    except ValueError as e:
        print(f"error: --precisions: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    shape = mb.SHAPES[args.shape]
    sources = mb.make_sources(shape, args.num_sources, seed=args.seed)
    model = mb.build_model(shape, seed=args.seed)
    print(
        f"sora bench model: shape {args.shape} ({model.num_parameters() / 1e6:.1f}M params), "
        f"{len(sources)} sources of {shape.min_source_len}-{shape.max_source_len} tokens, "
        f"{args.new_tokens} new tokens each, greedy, {torch.get_num_threads()} threads, "
        f"median of {args.repeats}"
    )
    results = []
    for precision in precisions:
        variant = mb.with_precision(model, precision)
        name = mb.PRECISIONS[precision]
        for bs in args.batch_sizes:
            (r,) = mb.bench_sora(variant, sources, [bs], args.new_tokens, args.repeats, name)
            print(f"  {name:>13} batch {bs:>4}: {r.tokens_per_s:8.0f} tokens/s  "
                  f"({r.median_s:.2f} s)", flush=True)
            results.append(r)
    print(mb.format_table(results, reference="sora" if "float32" in precisions else None))
    return 0
