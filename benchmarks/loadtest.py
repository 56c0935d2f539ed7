"""Closed-loop HTTP load test for a running Sora deployment.

    python -m benchmarks.loadtest --url http://127.0.0.1:8000 \
        --concurrency 8 --requests 200 --duration 60 --mix translate=2,summarize=1,answer=1

`--concurrency` workers each send one request, wait for its answer and send the next,
so the offered load follows the server's speed (a closed loop: latency percentiles are
what a client with that many requests in flight sees, not an open-loop arrival rate).
The run is always bounded: it stops after `--requests` requests or `--duration`
seconds, whichever comes first, and both have hard ceilings. The report gives, per task
and overall, completed and failed requests, throughput (requests/s and generated
tokens/s over the measured wall time) and latency percentiles; `--json FILE` writes
the same as JSON.

Needs only httpx (a dev dependency). Point it at your own deployment.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

TASKS = ("translate", "summarize", "answer")
MAX_REQUESTS = 1_000_000  # hard ceilings: a typo must not turn into an endless run
MAX_DURATION_S = 3600.0
MAX_CONCURRENCY = 1024
PERCENTILES = (50, 90, 95, 99)

# Built-in inputs, short and varied, so a run needs no data files (--inputs adds yours).
SAMPLES: dict[str, list[dict[str, Any]]] = {
    "translate": [
        {"text": "The weather is nice today.", "target_lang": "de"},
        {"text": "Where is the train station?", "target_lang": "fr"},
        {"text": "We will meet again tomorrow morning at nine.", "target_lang": "es"},
        {"text": "Thank you very much for your help.", "target_lang": "it"},
    ],
    "summarize": [
        {"text": "The meeting covered the budget for next year, two new hires for the "
                 "platform team and the roadmap for the second half. The budget grows by "
                 "five percent; both hires start in March."},
        {"text": "Heavy rain closed several roads in the north of the city on Monday. "
                 "Officials expect the water to recede by Wednesday and ask drivers to "
                 "avoid the area until then."},
    ],
    "answer": [
        {"question": "What is the capital of France?",
         "context": "Paris is the capital and most populous city of France."},
        {"question": "When do the new hires start?",
         "context": "The budget grows by five percent; both hires start in March."},
    ],
}


@dataclass
class Sample:
    task: str
    ok: bool
    latency_s: float
    status: int  # HTTP status, 0 for a transport error
    error: str = ""  # the server's error code, or the transport exception's name
    completion_tokens: int = 0


@dataclass
class Stats:
    requests: int = 0
    ok: int = 0
    failed: int = 0
    requests_per_s: float = 0.0
    completion_tokens_per_s: float = 0.0
    latency_s: dict[str, float] = field(default_factory=dict)  # "p50", ..., "mean", "max"
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class Report:
    url: str
    concurrency: int
    wall_s: float
    stopped_by: str  # "requests" or "duration"
    overall: Stats
    tasks: dict[str, Stats]


def parse_mix(text: str) -> dict[str, float]:
    """`translate=2,summarize=1` -> relative weights; a bare task name has weight 1."""
    mix: dict[str, float] = {}
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        name, _, weight = item.partition("=")
        if name not in TASKS:
            raise argparse.ArgumentTypeError(f"unknown task {name!r} (expected {TASKS})")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad weight in {item!r}") from None
        if w < 0 or not math.isfinite(w):
            raise argparse.ArgumentTypeError(f"bad weight in {item!r}")
        mix[name] = w
    if not mix or sum(mix.values()) <= 0:
        raise argparse.ArgumentTypeError("the mix needs at least one task with weight > 0")
    return mix


def load_inputs(path: Path) -> dict[str, list[dict[str, Any]]]:
    """JSON lines, each `{"task": ..., <request body fields>}`."""
    inputs: dict[str, list[dict[str, Any]]] = {t: [] for t in TASKS}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        task = row.pop("task", None)
        if task not in TASKS:
            raise ValueError(f"{path}:{n}: 'task' must be one of {TASKS}")
        inputs[task].append(row)
    return inputs


def percentile(sorted_values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return math.nan
    k = (len(sorted_values) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summarize(samples: list[Sample], wall_s: float) -> Stats:
    ok = sorted(s.latency_s for s in samples if s.ok)
    latency = {f"p{p}": percentile(ok, p) for p in PERCENTILES}
    latency["mean"] = sum(ok) / len(ok) if ok else math.nan
    latency["max"] = ok[-1] if ok else math.nan
    return Stats(
        requests=len(samples),
        ok=len(ok),
        failed=len(samples) - len(ok),
        requests_per_s=len(ok) / wall_s if wall_s > 0 else 0.0,
        completion_tokens_per_s=(
            sum(s.completion_tokens for s in samples if s.ok) / wall_s if wall_s > 0 else 0.0
        ),
        latency_s=latency,
        errors=dict(Counter(s.error for s in samples if not s.ok)),
    )


class LoadTest:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.url = args.url.rstrip("/")
        self.inputs = load_inputs(args.inputs) if args.inputs else SAMPLES
        self.mix = {t: w for t, w in args.mix.items() if w > 0 and self.inputs.get(t)}
        if not self.mix:
            raise SystemExit("no inputs for any task in the mix")
        self.rng = random.Random(args.seed)
        self.samples: list[Sample] = []
        self.issued = 0
        self.deadline = 0.0

    def _next_request(self) -> tuple[str, dict[str, Any]] | None:
        """The next (task, body), or None once the request or time budget is spent.
        Called from the single event loop thread: no lock needed."""
        if self.issued >= self.args.requests or time.monotonic() >= self.deadline:
            return None
        self.issued += 1
        task = self.rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
        body = dict(self.rng.choice(self.inputs[task]))
        options = dict(body.get("options") or {})
        options.setdefault("max_new_tokens", self.args.max_new_tokens)
        body["options"] = options
        return task, body

    async def _one(self, client: httpx.AsyncClient, task: str, body: dict[str, Any]) -> Sample:
        start = time.perf_counter()
        try:
            r = await client.post(f"/v1/{task}", json=body)
        except httpx.HTTPError as e:
            return Sample(task, False, time.perf_counter() - start, 0, type(e).__name__)
        latency = time.perf_counter() - start
        if r.status_code != 200:
            try:
                code = r.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = f"http_{r.status_code}"
            return Sample(task, False, latency, r.status_code, code)
        try:
            tokens = int(r.json()["usage"]["completion_tokens"])
        except (ValueError, KeyError, TypeError):
            tokens = 0
        return Sample(task, True, latency, 200, completion_tokens=tokens)

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while (nxt := self._next_request()) is not None:
            self.samples.append(await self._one(client, *nxt))

    async def wait_ready(self, client: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + self.args.ready_timeout
        while True:
            try:
                if (await client.get("/health/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() >= deadline:
                raise SystemExit(f"{self.url}/health/ready not 200 after "
                                 f"{self.args.ready_timeout:.0f} s")
            await asyncio.sleep(0.5)

    async def run(self) -> Report:
        a = self.args
        headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else {}
        limits = httpx.Limits(max_connections=a.concurrency,
                              max_keepalive_connections=a.concurrency)
        async with httpx.AsyncClient(base_url=self.url, headers=headers, limits=limits,
                                     timeout=a.timeout) as client:
            await self.wait_ready(client)
            for _ in range(a.warmup):  # unmeasured: first-call costs stay out of the report
                task = next(iter(self.mix))
                await self._one(client, task, {**self.inputs[task][0],
                                               "options": {"max_new_tokens": a.max_new_tokens}})
            start = time.monotonic()
            self.deadline = start + a.duration
            await asyncio.gather(*(self._worker(client) for _ in range(a.concurrency)))
            wall = time.monotonic() - start
        stopped_by = "requests" if self.issued >= a.requests else "duration"
        by_task = {t: summarize([s for s in self.samples if s.task == t], wall)
                   for t in self.mix}
        return Report(self.url, a.concurrency, wall, stopped_by,
                      summarize(self.samples, wall), by_task)


def format_report(report: Report) -> str:
    ms = lambda v: "-" if math.isnan(v) else f"{v * 1000:.0f}"  # noqa: E731
    head = (f"{'task':<10} {'reqs':>6} {'ok':>6} {'fail':>5} {'req/s':>7} {'tok/s':>7} "
            + " ".join(f"{'p' + str(p) + ' ms':>8}" for p in PERCENTILES)
            + f" {'max ms':>8}")
    lines = [
        f"Sora load test: {report.url}, concurrency {report.concurrency}, "
        f"{report.wall_s:.1f} s (stopped by {report.stopped_by})",
        head,
        "-" * len(head),
    ]
    rows = [*report.tasks.items(), ("all", report.overall)]
    for name, s in rows:
        lines.append(
            f"{name:<10} {s.requests:>6} {s.ok:>6} {s.failed:>5} {s.requests_per_s:>7.1f} "
            f"{s.completion_tokens_per_s:>7.1f} "
            + " ".join(f"{ms(s.latency_s[f'p{p}']):>8}" for p in PERCENTILES)
            + f" {ms(s.latency_s['max']):>8}"
        )
    if report.overall.errors:
        lines.append("errors: " + ", ".join(f"{k}={v}" for k, v in
                                            sorted(report.overall.errors.items())))
    return "\n".join(lines)


def _bounded(kind: type, lo: float, hi: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loadtest",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server's HTTP base URL")
    p.add_argument("--concurrency", type=_bounded(int, 1, MAX_CONCURRENCY), default=8,
                   help="requests in flight (closed-loop workers)")
    p.add_argument("--requests", type=_bounded(int, 1, MAX_REQUESTS), default=200,
                   help="stop after this many requests")
    p.add_argument("--duration", type=_bounded(float, 0.1, MAX_DURATION_S), default=60.0,
                   help="stop issuing after this many seconds")
    p.add_argument("--mix", type=parse_mix, default="translate=2,summarize=1,answer=1",
                   help="task weights, e.g. translate=2,summarize=1,answer=1")
    p.add_argument("--max-new-tokens", type=_bounded(int, 1, 4096), default=32,
                   help="options.max_new_tokens of each request (unless --inputs sets it)")
    p.add_argument("--inputs", type=Path, help="JSON lines of request bodies with a 'task' key")
    p.add_argument("--api-key", help="sent as 'Authorization: Bearer KEY'")
    p.add_argument("--timeout", type=_bounded(float, 0.1, 600), default=60.0,
                   help="per-request timeout, seconds")
    p.add_argument("--warmup", type=_bounded(int, 0, 100), default=2,
                   help="unmeasured requests before the run")
    p.add_argument("--ready-timeout", type=_bounded(float, 0, 600), default=30.0,
                   help="wait this long for /health/ready first")
    p.add_argument("--seed", type=int, default=0, help="task and input choice")
    p.add_argument("--json", type=Path, help="also write the report here as JSON")
    return p


def _finite(value: Any) -> Any:
    """NaN (no successful request) as null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = asyncio.run(LoadTest(args).run())
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(_finite(asdict(report)), indent=2) + "\n",
                             encoding="utf-8")
    return 0 if report.overall.ok > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
