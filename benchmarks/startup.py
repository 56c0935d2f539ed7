"""Start-up of `sora serve`: time to ready and time to compiled, cold and from the cache.

    python -m benchmarks.startup --model-repository checkpoints/sora-default --runs 3

Each run starts `sora serve` twice, each time in a fresh process, with compile=background
and one compile cache directory: first empty (cold: inductor compiles every kernel),
then again over the same directory (cached: a restart). For each start it reports the
seconds from spawning the process to `/health/ready` answering 200 (ready) and to every
model's compiled steps being in use (`/health/ready`'s `compile` field; compiled), and
prints the medians over the runs. --throughput then measures HTTP throughput
(closed-loop clients, `benchmarks.load`): an eager server (compile=off), a background
server while it compiles and after its swap, and a server started with compile=wait.
Not a test: the figures depend on the machine (and on what else runs on it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.load import _free_port, format_table, run_level, server_env, stop_server

POLL_S = 0.1


@dataclass
class Start:
    ready_s: float
    compiled_s: float | None  # None: not compiled (compile off, or it failed)
    compile: dict[str, str]  # each model's compile state at the end


class Server:
    """A `sora serve` process (HTTP only) that has answered /health/ready."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, t0: float,
                 deadline: float) -> None:
        self.proc, self.url, self.t0, self.deadline = proc, url, t0, deadline
        self.ready_s = 0.0

    def state(self) -> dict[str, str]:
        return dict(httpx.get(f"{self.url}/health/ready", timeout=5).json()["compile"])

    def wait_compiled(self) -> Start:
        """Wait until no model is compiling any more."""
        body = _wait(self.proc, self.url, self.deadline,
                     lambda b: b is not None and "compiling" not in b["compile"].values())
        compiled = all(state == "compiled" for state in body["compile"].values())
        compiled_s = time.perf_counter() - self.t0 if compiled else None
        return Start(self.ready_s, compiled_s, body["compile"])


@contextmanager
def serve(repository: Path, cache_dir: Path, compile: str, threads: int,
          timeout_s: float) -> Iterator[Server]:
    """`sora serve` in a process of its own, yielded once ready; stopped afterwards."""
    port = _free_port()
    env = server_env(dict(os.environ), compile=compile, compile_cache_dir=cache_dir,
                     torch_threads=threads or None, grpc_enabled="false")
    cmd = [sys.executable, "-m", "cli.main", "--log-level", "WARNING", "serve",
           "--model-repository", str(repository), "--host", "127.0.0.1",
           "--http-port", str(port)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    server = Server(proc, f"http://127.0.0.1:{port}", t0, time.monotonic() + timeout_s)
    try:
        _wait(proc, server.url, server.deadline, lambda b: b is not None)
        server.ready_s = time.perf_counter() - t0
        yield server
    finally:
        stop_server(proc)


def _wait(proc: subprocess.Popen[bytes], url: str, deadline: float,
          done: Callable[[dict[str, Any] | None], bool]) -> dict[str, Any]:
    """Poll /health/ready until `done` accepts its body (None while not ready)."""
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            r = httpx.get(f"{url}/health/ready", timeout=2)
            body = r.json() if r.status_code == 200 else None
        except httpx.HTTPError:
            body = None
        if done(body):
            assert body is not None
            return body
        if time.monotonic() > deadline:
            raise SystemExit("the server did not get there in time (--timeout)")
        time.sleep(POLL_S)


def median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def startup_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    starts: dict[str, list[Start]] = {"cold": [], "cached": []}
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="sora-compile-cache-") as tmp:
            for kind in ("cold", "cached"):
                with serve(args.model_repository, Path(tmp), args.compile, args.threads,
                           args.timeout) as server:
                    start = (server.wait_compiled() if args.compile != "off"
                             else Start(server.ready_s, None, server.state()))
                starts[kind].append(start)
                print(f"run {run + 1} {kind}: ready {start.ready_s:.1f} s, compiled "
                      f"{_seconds(start.compiled_s)} ({start.compile})", file=sys.stderr,
                      flush=True)
    return [{"start": kind, "runs": len(s), "ready s": median([x.ready_s for x in s]),
             "compiled s": _seconds(median([x.compiled_s for x in s]))}
            for kind, s in starts.items()]


def throughput_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """HTTP throughput of an eager server (compile=off), of a background server while it
    compiles (cold) and after its swap, and of a compile=wait server (one cache
    directory: wait compiles from what background left there)."""
    rows: list[dict[str, Any]] = []

    def measure(name: str, url: str, duration_s: float) -> None:
        level = asyncio.run(run_level(name, url, None, "http", args.concurrency,
                                      args.requests, duration_s, args.max_new_tokens))
        rows.append(level.row())
        print(format_table([rows[-1]]), file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="sora-compile-cache-") as tmp:
        cache = args.cache_dir or Path(tmp)
        with serve(args.model_repository, cache, "off", args.threads, args.timeout) as srv:
            measure("eager (off)", srv.url, args.duration)
        with serve(args.model_repository, cache, "background", args.threads,
                   args.timeout) as srv:
            measure("compiling", srv.url, args.during)
            if "compiling" not in srv.state().values():
                print("warning: the compile ended during the 'compiling' level",
                      file=sys.stderr)
            srv.wait_compiled()
            measure("swapped in", srv.url, args.duration)
        with serve(args.model_repository, cache, "wait", args.threads, args.timeout) as srv:
            measure("wait", srv.url, args.duration)
    return rows


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-repository", type=Path, default=Path("checkpoints/sora-default"))
    p.add_argument("--runs", type=int, default=3,
                   help="cold+cached pairs (medians over them); 0: --throughput only")
    p.add_argument("--compile", choices=["background", "off"], default="background",
                   help="off: time to ready of an eager server alone")
    p.add_argument("--threads", type=int, default=0, help="the server's torch threads (0: all)")
    p.add_argument("--timeout", type=float, default=900.0, help="per start, seconds")
    p.add_argument("--throughput", action="store_true",
                   help="also: throughput after the swap vs compile=wait")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="--throughput's compile cache (default: a fresh one)")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--requests", type=int, default=512)
    p.add_argument("--duration", type=float, default=60.0, help="seconds per level at most")
    p.add_argument("--during", type=float, default=20.0,
                   help="seconds of load while the background compile runs")
    p.add_argument("--max-new-tokens", type=int, default=32)
    args = p.parse_args(argv)
    if args.runs < 0 or (args.runs == 0 and not args.throughput):
        p.error("--runs must be >= 1, or 0 with --throughput")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.runs:
        print(format_table(startup_rows(args)))
    if args.throughput:
        print(format_table(throughput_rows(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
