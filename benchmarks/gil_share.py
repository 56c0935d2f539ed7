"""What Python work next to the engine costs it: the engine-level Translate benchmark
alone, then with a pure-Python "front end" holding the GIL for a share of the time in
the engine's own process (a thread), then with the same load in another process.

    python -m benchmarks.gil_share --model-repository checkpoints/sora-default

The engine thread needs the GIL between its torch ops (hundreds per decode step), so
Python work in its interpreter (the event loop parsing HTTP, gRPC callbacks) delays it
even on an idle core; the same work in another process does not. The torch thread count
defaults to 1, leaving a core free for the load, so the two cases differ only in
sharing the interpreter. Each run is a fresh process; rounds alternate the three.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.load import format_table, run_engine_level, server_env

MODES = ("alone", "thread", "process")


def hold_gil(stop: Any, duty: float, chunk_s: float, ready: Any = None) -> None:
    """Busy pure-Python loops of `chunk_s` (the GIL held throughout) spaced so they take
    `duty` of the time: what an event loop handling requests looks like to the GIL."""
    rest = chunk_s * (1 - duty) / duty
    if ready is not None:
        ready.set()
    while not stop.is_set():
        end = time.perf_counter() + chunk_s
        while time.perf_counter() < end:
            pass
        time.sleep(rest)


def child(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """One engine-level run in this process with the load placed as `mode` says."""
    stop: Any
    if mode == "thread":
        stop = threading.Event()
        threading.Thread(target=hold_gil, args=(stop, args.duty, args.chunk_ms / 1000),
                         daemon=True).start()
    elif mode == "process":
        ctx = multiprocessing.get_context("spawn")
        stop, ready = ctx.Event(), ctx.Event()
        ctx.Process(target=hold_gil, args=(stop, args.duty, args.chunk_ms / 1000, ready),
                    daemon=True).start()
        ready.wait(60)  # its start-up (imports) is not part of the load
    try:
        level = run_engine_level(mode, args.concurrency, args.requests, 300.0,
                                 args.max_new_tokens)
    finally:
        if mode != "alone":
            stop.set()
    row = level.row()
    return {"load": mode, "requests": row["requests"], "tok/s": row["tok/s"],
            "p50 ms": row["p50 ms"]}


def run(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    env = server_env(dict(os.environ), model_repository=args.model_repository,
                     torch_threads=args.threads)
    cmd = [sys.executable, "-m", "benchmarks.gil_share", "--child", mode,
           "--model-repository", str(args.model_repository), "--duty", str(args.duty),
           "--chunk-ms", str(args.chunk_ms), "--concurrency", str(args.concurrency),
           "--requests", str(args.requests), "--max-new-tokens", str(args.max_new_tokens)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.splitlines()[-1]))


def summarize(rows: list[dict[str, Any]], rounds: int) -> list[dict[str, Any]]:
    """Median tokens/s per load and the median of each round's share of `alone`."""
    by_round = [rows[r * len(MODES):(r + 1) * len(MODES)] for r in range(rounds)]
    out = []
    for i, mode in enumerate(MODES):
        runs = [run[i] for run in by_round]
        out.append({
            "load": mode, "rounds": rounds,
            "median tok/s": statistics.median(r["tok/s"] for r in runs),
            "median % of alone": 100 * statistics.median(
                r["tok/s"] / run[0]["tok/s"] for r, run in zip(runs, by_round, strict=True)),
        })
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gil_share", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-repository", type=Path, required=True)
    p.add_argument("--duty", type=float, default=0.2,
                   help="share of the time the load holds the GIL (default 0.2)")
    p.add_argument("--chunk-ms", type=float, default=1.0,
                   help="length of each GIL-holding stretch (default 1 ms)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--requests", type=int, default=1024)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 0 < args.duty < 1:
        p.error("--duty must be between 0 and 1")
    if args.chunk_ms <= 0:
        p.error("--chunk-ms must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args)))
        return 0
    rows = []
    for _ in range(args.rounds):
        for mode in MODES:
            rows.append(run(mode, args))
            print(format_table([rows[-1]]).splitlines()[-1], file=sys.stderr, flush=True)
    print(format_table(rows))
    print(f"\nover {args.rounds} rounds:\n" + format_table(summarize(rows, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
