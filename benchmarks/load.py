"""Load generator for a running Sora server: throughput, latency percentiles and
time to first token at several concurrency levels, over HTTP (SSE) or gRPC
(GenerateStream).

    python -m benchmarks.load --url http://127.0.0.1:8000                 # a server
    python -m benchmarks.load --model-repository checkpoints/sora-default --compare

Without --url it starts `sora serve` itself (in another process, on free ports) for
--model-repository; --compare also starts a one-request-at-a-time server
(max_batch_sequences=1) over the same checkpoint, so the table shows what continuous
batching buys. Every request generates exactly --max-new-tokens tokens (ignore_eos), so
the servers do the same work. Requests are unary (Translate) unless --stream asks for
token streaming, which also measures time to first token. Each level stops after
--requests requests or --duration seconds, whichever comes first.

    python -m benchmarks.load --model-repository checkpoints/sora-default \\
        --protocol engine,grpc,http --concurrency 64 --requests 1024 --rounds 5

measures what the front ends cost: `engine` sends the same requests to the bare engine
(built from the same settings, in a process of its own, while the server idles), and the
rounds alternate engine, gRPC and HTTP so that drift in machine speed hits all three
alike; the summary gives each protocol's median share of the engine-level throughput.
`core` does the same through an engine-core process (the server's default), without
HTTP or gRPC: what the process boundary costs on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

TEXT = "The quick brown fox jumps over the lazy dog. How are you today?"


@dataclass
class Sample:
    ok: bool
    latency_s: float
    ttft_s: float | None
    tokens: int
    error: str = ""


@dataclass
class Level:
    server: str
    protocol: str
    concurrency: int
    wall_s: float
    samples: list[Sample] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        ok = [s for s in self.samples if s.ok]
        lat = sorted(s.latency_s for s in ok)
        ttft = sorted(s.ttft_s for s in ok if s.ttft_s is not None)
        tokens = sum(s.tokens for s in ok)
        return {
            "server": self.server, "proto": self.protocol, "clients": self.concurrency,
            "requests": len(ok), "errors": len(self.samples) - len(ok),
            "req/s": len(ok) / self.wall_s if self.wall_s else 0.0,
            "tok/s": tokens / self.wall_s if self.wall_s else 0.0,
            "p50 ms": pct(lat, 50) * 1000, "p95 ms": pct(lat, 95) * 1000,
            "p99 ms": pct(lat, 99) * 1000, "ttft p50 ms": pct(ttft, 50) * 1000,
            "ttft p95 ms": pct(ttft, 95) * 1000,
        }


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


# -- one request ---------------------------------------------------------------------------


async def http_request(session: aiohttp.ClientSession, url: str, max_new_tokens: int,
                       stream: bool) -> Sample:
    # source_lang given: the figures measure serving, not language detection.
    body = {"text": TEXT, "source_lang": "en", "target_lang": "de", "stream": stream,
            "options": {"max_new_tokens": max_new_tokens, "ignore_eos": True}}
    t0 = time.perf_counter()
    ttft = None
    event = "message"
    try:
        async with session.post(f"{url}/v1/translate", json=body) as r:
            if r.status != 200:
                await r.read()
                return Sample(False, time.perf_counter() - t0, None, 0, str(r.status))
            if not stream:
                tokens = int((await r.json())["usage"]["completion_tokens"])
                return Sample(True, time.perf_counter() - t0, None, tokens)
            async for raw in r.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = json.loads(line[5:])
                    if event == "message" and ttft is None:
                        ttft = time.perf_counter() - t0
                    elif event == "done":
                        tokens = int(data["usage"]["completion_tokens"])
                        return Sample(True, time.perf_counter() - t0, ttft, tokens)
                    elif event == "error":
                        return Sample(False, time.perf_counter() - t0, ttft, 0,
                                      data["error"]["code"])
    except aiohttp.ClientError as e:
        return Sample(False, time.perf_counter() - t0, ttft, 0, type(e).__name__)
    return Sample(False, time.perf_counter() - t0, ttft, 0, "no done event")


def grpc_caller(
    target: str, max_new_tokens: int, stream: bool
) -> tuple[Callable[[], Awaitable[Sample]], Callable[[], Awaitable[None]]]:
    """A Translate (or, streaming, GenerateStream) caller; stubs are imported only when
    gRPC is benchmarked."""
    import grpc
    import grpc.aio

    from proto.sora.v1 import sora_pb2, sora_pb2_grpc

    channel = grpc.aio.insecure_channel(target)
    stub = sora_pb2_grpc.SoraStub(channel)
    options = sora_pb2.DecodingOptions(max_new_tokens=max_new_tokens, ignore_eos=True)
    request = sora_pb2.GenerateStreamRequest(
        task=sora_pb2.TASK_TRANSLATE, text=TEXT, target_lang="de", options=options
    )
    unary = sora_pb2.TranslateRequest(texts=[TEXT], source_lang="en", target_lang="de",
                                      options=options)

    async def call() -> Sample:
        t0 = time.perf_counter()
        ttft, tokens = None, 0
        try:
            if not stream:
                reply = await stub.Translate(unary)
                tokens = reply.results[0].usage.completion_tokens
                return Sample(True, time.perf_counter() - t0, None, tokens)
            async for msg in stub.GenerateStream(request):
                if ttft is None and msg.text:
                    ttft = time.perf_counter() - t0
                if msg.HasField("usage"):  # the last message
                    tokens = msg.usage.completion_tokens
        except grpc.aio.AioRpcError as e:
            return Sample(False, time.perf_counter() - t0, ttft, 0, e.code().name)
        return Sample(True, time.perf_counter() - t0, ttft, tokens)

    async def close() -> None:
        await channel.close()

    return call, close


# -- the engine alone ---------------------------------------------------------------------


async def engine_caller(
    max_new_tokens: int, core: bool = False,
) -> tuple[Callable[[], Awaitable[Sample]], Callable[[], Awaitable[None]]]:
    """The same Translate request sent straight to the engine a server would build from
    this process's SORA_* settings, with no front end in the way: the ceiling the HTTP and
    gRPC figures are measured against. core=True: to an engine-core process instead (what
    the pipe costs, without HTTP or gRPC)."""
    from model.sampling import DecodingParams
    from service import heap
    from service.config import Settings
    from service.engine import TaskInput
    from service.http.app import new_registry

    settings = Settings.load(engine_process=core)
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    registry = new_registry(settings)
    await registry.load_all()
    heap.freeze()  # as `sora serve` does once its models are loaded
    engine = registry.get()
    task = TaskInput("translate", TEXT, target_lang="de")
    params = DecodingParams(max_new_tokens=max_new_tokens, ignore_eos=True)

    async def call() -> Sample:
        t0 = time.perf_counter()
        done = await engine.generate(task, params)
        return Sample(True, time.perf_counter() - t0, None, done.completion_tokens)

    async def close() -> None:
        await registry.drain(timeout=10.0)

    return call, close


ENGINE_LEVELS = ("engine", "core")  # runs without a front end, in a process of their own


# -- one level -----------------------------------------------------------------------------


async def run_level(name: str, http_url: str | None, grpc_target: str | None, protocol: str,
                    concurrency: int, requests: int, duration_s: float,
                    max_new_tokens: int, stream: bool = False) -> Level:
    """`concurrency` closed-loop clients share `requests` requests (or `duration_s`)."""
    left = requests
    samples: list[Sample] = []
    call: Callable[[], Awaitable[Sample]]
    close: Callable[[], Awaitable[None]]
    if protocol in ENGINE_LEVELS:
        call, close = await engine_caller(max_new_tokens, core=protocol == "core")
    elif protocol == "grpc":
        if grpc_target is None:
            raise SystemExit("gRPC target unknown: pass --grpc-target")
        call, close = grpc_caller(grpc_target, max_new_tokens, stream)
    else:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                        timeout=aiohttp.ClientTimeout(total=300))

        async def call() -> Sample:
            return await http_request(session, http_url or "", max_new_tokens, stream)

        close = session.close

    async def worker() -> None:
        nonlocal left
        while left > 0 and time.monotonic() < deadline:
            left -= 1
            samples.append(await call())

    try:
        # Warm the connections (and the engine at this batch size) before measuring.
        await asyncio.gather(*(call() for _ in range(concurrency)))
        deadline = time.monotonic() + duration_s
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall_s = time.perf_counter() - t0
    finally:
        await close()
    return Level(name, protocol, concurrency, wall_s, samples)
    # TTFT is the first non-empty text piece: a model that only emits special tokens
    # (a random-weight test checkpoint) shows nan.


def run_engine_level(name: str, concurrency: int, requests: int, duration_s: float,
                     max_new_tokens: int, protocol: str = "engine") -> Level:
    """run_level() for the bare engine (or engine core), on the event loop a server with
    this process's SORA_* settings would run."""
    from service.config import Settings

    with asyncio.Runner(loop_factory=Settings.load().loop_factory()) as runner:
        return runner.run(run_level(name, None, None, protocol, concurrency, requests,
                                    duration_s, max_new_tokens))


def engine_level(repository: Path, concurrency: int, args: argparse.Namespace,
                 protocol: str = "engine") -> dict[str, Any]:
    """One engine-level run in a fresh process configured like the servers (so neither
    shares an interpreter with the other); the load generator only reads its result."""
    env = server_env(dict(os.environ), model_repository=repository,
                     torch_threads=args.server_threads)
    cmd = [sys.executable, "-m", "benchmarks.load", "--engine-level", protocol, "--concurrency",
           str(concurrency), "--requests", str(args.requests), "--duration",
           str(args.duration), "--max-new-tokens", str(args.max_new_tokens)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.splitlines()[-1]))


# -- local servers ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Thread limits meant for the load generator (`OMP_NUM_THREADS=1 python -m ...`) must not
# leak into the server it starts: that server is configured with --server-threads.
CLIENT_ONLY_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def server_env(environ: dict[str, str], **overrides: Any) -> dict[str, str]:
    """The environment of a local server: ours minus client thread limits, plus SORA_*
    settings from `overrides` (None values are left out)."""
    env = {k: v for k, v in environ.items() if k not in CLIENT_ONLY_ENV}
    env.update({f"SORA_{k.upper()}": str(v) for k, v in overrides.items() if v is not None})
    return env


@contextmanager
def local_server(repository: Path, **overrides: Any) -> Iterator[tuple[str, str | None]]:
    """`sora serve` for `repository` on free loopback ports, in its own process so the
    load generator does not share the server's interpreter (as a real client would not)."""
    http_port, grpc_port = _free_port(), _free_port()
    env = server_env(dict(os.environ), **overrides)
    cmd = [sys.executable, "-m", "cli.main", "--log-level", "WARNING", "serve",
           "--model-repository", str(repository), "--host", "127.0.0.1",
           "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the server for {repository} failed to start")
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the server for {repository} was not ready in 300 s")
            time.sleep(0.2)
        yield url, f"127.0.0.1:{grpc_port}"
    finally:
        stop_server(proc)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the server drains and exits), SIGKILL if it has not within 2 min."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()


# -- table -----------------------------------------------------------------------------------


def format_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no results)"
    cols = list(rows[0])
    cells = [[f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in cols]
             for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


async def bench(targets: list[tuple[str, str, str | None]], args: argparse.Namespace,
                protocols: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name, http_url, grpc_target in targets:
        for protocol in protocols:
            for concurrency in args.concurrency:
                if protocol in ENGINE_LEVELS:
                    rows.append(engine_level(args.model_repository, concurrency, args,
                                             protocol))
                else:
                    level = await run_level(name, http_url, grpc_target, protocol,
                                            concurrency, args.requests, args.duration,
                                            args.max_new_tokens, args.stream)
                    rows.append(level.row())
                    failed = Counter(s.error for s in level.samples if not s.ok)
                    if failed:  # which errors, so that a failed request can be explained
                        print(f"{name} {protocol} errors: {dict(failed)}", file=sys.stderr)
                print(format_table([rows[-1]]).splitlines()[-1], file=sys.stderr, flush=True)
    return rows


def over_rounds(rows: list[dict[str, Any]], rounds: int) -> list[dict[str, Any]]:
    """Median tokens/s per (server, protocol, clients) over the rounds and, where an
    engine-level run shares the round, the median of each round's ratio to it."""
    per_round = len(rows) // rounds
    by_round = [rows[r * per_round:(r + 1) * per_round] for r in range(rounds)]
    engine = [{x["clients"]: x["tok/s"] for x in run if x["proto"] == "engine"}
              for run in by_round]
    out = []
    for i, row in enumerate(by_round[0]):
        runs = [run[i] for run in by_round]
        summary = {"server": row["server"], "proto": row["proto"], "clients": row["clients"],
                   "rounds": rounds, "median tok/s": statistics.median(x["tok/s"] for x in runs)}
        if all(row["clients"] in e for e in engine):
            summary["median % of engine"] = 100 * statistics.median(
                x["tok/s"] / e[x["clients"]] for x, e in zip(runs, engine, strict=True))
        out.append(summary)
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running server's HTTP base URL")
    p.add_argument("--grpc-target", help="a running server's gRPC host:port")
    p.add_argument("--model-repository", type=Path,
                   help="start local servers for this repository (when --url is absent)")
    p.add_argument("--compare", action="store_true",
                   help="also start a one-request-at-a-time server (max_batch_sequences=1)")
    p.add_argument("--protocol", type=lambda s: s.split(","), default=["http"],
                   help="comma-separated http, grpc, engine, core (default http); engine "
                        "runs the same requests on the bare engine in its own process, core "
                        "on an engine-core process from one (both need --model-repository)")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat the protocols in turn this many times and print medians "
                        "(and, with engine, each protocol's median share of it)")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")],
                   default=[1, 16, 64], help="client counts (default 1,16,64)")
    p.add_argument("--requests", type=int, default=128, help="per level (default 128)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds per level at most")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--stream", action="store_true",
                   help="stream tokens (SSE / GenerateStream) and report time to first token")
    p.add_argument("--json", action="store_true", help="print rows as JSON lines too")
    p.add_argument("--server-threads", type=int, default=None,
                   help="torch threads of the servers this command starts (default: theirs)")
    p.add_argument("--engine-level", choices=ENGINE_LEVELS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if set(ENGINE_LEVELS) & set(args.protocol) and not args.model_repository:
        p.error("--protocol engine/core needs --model-repository")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.engine_level:  # the child process of engine_level()
        level = run_engine_level("batched", args.concurrency[0], args.requests,
                                 args.duration, args.max_new_tokens, args.engine_level)
        print(json.dumps(level.row()))
        return 0
    rows: list[dict[str, Any]] = []
    if args.url:
        for _ in range(args.rounds):
            rows += asyncio.run(bench([("remote", args.url, args.grpc_target)], args,
                                      args.protocol))
    elif args.model_repository:
        threads = args.server_threads
        with local_server(args.model_repository, torch_threads=threads) as (http_url,
                                                                              grpc_target):
            for _ in range(args.rounds):
                rows += asyncio.run(bench([("batched", http_url, grpc_target)], args,
                                          args.protocol))
        if args.compare:
            protocols = [p for p in args.protocol if p not in ENGINE_LEVELS]
            with local_server(args.model_repository, max_batch_sequences=1,
                              torch_threads=threads) as (http_url, grpc_target):
                rows += asyncio.run(bench([("serial", http_url, grpc_target)], args,
                                          protocols))
    else:
        print("give --url or --model-repository", file=sys.stderr)
        return 2
    print(format_table(rows))
    if args.rounds > 1:
        summary = over_rounds([r for r in rows if r["server"] != "serial"], args.rounds)
        print(f"\nover {args.rounds} rounds:\n" + format_table(summary))
    if args.json:
        for row in rows:
            print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
