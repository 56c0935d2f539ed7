"""Serving throughput and latency of the engine under N concurrent clients (`sora bench
engine`), next to two references measured in the same run on the same sources:

  one-at-a-time   the same engine limited to one sequence per batch (no batching)
  raw generate    `model.generation.generate` on all sources as one batch of 64,
                  the ceiling continuous batching can approach on this hardware

Each client sends its requests one after another (closed loop); every request asks
for exactly `--new-tokens` tokens (ignore_eos), so tokens/s compare like for like.
Models: the shipped checkpoint when present, and a random-weight model of a named
shape ("small": vocab 8000, d_model 256, 3+3 layers) whose speed, not output, counts.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from model.checkpoint import DEFAULT_CHECKPOINT, Checkpoint, load_checkpoint
from model.generation import generate
from model.sampling import DecodingParams
from model.tokenizer import SoraTokenizer
from service.engine import Engine, EngineConfig, TaskInput
from service.engine.stats import RequestStats, StepStats

from .model_bench import SHAPES, BenchShape, build_model

RAW_BATCH = 64
LANGS = ("de", "fr", "es", "it", "zh")


@dataclass
class RunResult:
    name: str
    clients: int
    requests: int
    tokens: int
    seconds: float
    latencies: list[float]  # client-side seconds per request
    ttfts: list[float]  # engine arrival -> first token, per request
    mean_batch: float  # mean rows per decode step

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# -- inputs --------------------------------------------------------------------------------


def synthetic_tokenizer(seed: int = 0) -> tuple[SoraTokenizer, list[str]]:
    """A small BPE tokenizer over pseudo-words, and those words (for building sources).
    Ids the random model produces beyond its vocabulary decode to nothing."""
    rng = random.Random(seed)
    words = [
        "".join(rng.choice("abcdefghiklmnoprstuvw") for _ in range(rng.randint(2, 9)))
        for _ in range(400)
    ]
    corpus = [" ".join(rng.choices(words, k=12)) + "." for _ in range(400)]
    return SoraTokenizer.train(corpus, vocab_size=1000), words


def make_inputs(
    tokenizer: SoraTokenizer, words: list[str], n: int, lo: int, hi: int, seed: int = 0
) -> list[TaskInput]:
    """`n` translate/summarize inputs whose sources have lo..hi tokens (seeded)."""
    rng = random.Random(seed)
    out: list[TaskInput] = []
    for i in range(n):
        target = rng.randint(lo, hi)
        lang = LANGS[i % len(LANGS)] if i % 2 == 0 else None
        task = "translate" if lang else "summarize"
        while True:  # add words up to `target` tokens; retry the rare overshoot past hi
            text = rng.choice(words)
            while len(tokenizer.source_ids(task, text + ".", lang)) < target:
                text = f"{text} {rng.choice(words)}"
            if len(tokenizer.source_ids(task, text + ".", lang)) <= hi:
                break
        out.append(TaskInput(task, text + ".", target_lang=lang))
    return out


def source_ids(tokenizer: SoraTokenizer, inp: TaskInput) -> list[int]:
    return tokenizer.source_ids(inp.task, inp.text, inp.target_lang, context=inp.context)


# -- measurements -----------------------------------------------------------------------


async def drive_engine(
    name: str,
    checkpoint: Checkpoint,
    config: EngineConfig,
    inputs: list[TaskInput],
    params: DecodingParams,
    clients: int,
    per_client: int,
) -> RunResult:
    """`clients` concurrent callers, each sending `per_client` requests in turn."""
    engine = Engine(checkpoint, config, name=name)
    await engine.start()
    requests: list[RequestStats] = []
    steps: list[StepStats] = []

    def listen(record: RequestStats | StepStats) -> None:
        if isinstance(record, RequestStats):
            requests.append(record)
        elif record.kind == "decode":
            steps.append(record)

    # Warm the batch shapes this run will use, untimed.
    await asyncio.gather(*(
        engine.generate(inputs[i % len(inputs)], params) for i in range(min(clients, 8))
    ))
    engine.add_listener(listen)
    latencies: list[float] = []
    tokens = 0

    async def client(c: int) -> None:
        nonlocal tokens
        for r in range(per_client):
            inp = inputs[(c * per_client + r) % len(inputs)]
            t0 = time.perf_counter()
            done = await engine.generate(inp, params)
            latencies.append(time.perf_counter() - t0)
            tokens += done.completion_tokens

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    seconds = time.perf_counter() - start
    await engine.drain(timeout=10.0)
    return RunResult(
        name=name,
        clients=clients,
        requests=clients * per_client,
        tokens=tokens,
        seconds=seconds,
        latencies=latencies,
        ttfts=[r.ttft_s for r in requests if r.ttft_s is not None],
        mean_batch=statistics.fmean(s.batch_size for s in steps) if steps else 0.0,
    )


def raw_generate(
    checkpoint: Checkpoint, inputs: list[TaskInput], params: DecodingParams, repeats: int
) -> RunResult:
    """`generate()` on the first RAW_BATCH sources as one batch (median of repeats)."""
    sources = [source_ids(checkpoint.tokenizer, inp) for inp in inputs[:RAW_BATCH]]
    generate(checkpoint.model, checkpoint.tokenizer, sources, params)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        results = generate(checkpoint.model, checkpoint.tokenizer, sources, params)
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    tokens = sum(len(r.token_ids) for r in results)
    return RunResult("raw generate", len(sources), len(sources), tokens, seconds,
                     [seconds] * len(sources), [], float(len(sources)))


# -- the table ----------------------------------------------------------------------------


def format_table(results: list[RunResult], raw: RunResult, single: RunResult) -> str:
    head = ["run", "clients", "reqs", "tok/s", "req/s", "batch", "p50 s", "p95 s", "p99 s",
            "ttft p50", "ttft p95", "x 1-at-a-time", "/ raw b64"]
    rows = [head]
    for r in [single, *results, raw]:
        rows.append([
            r.name, str(r.clients), str(r.requests), f"{r.tokens_per_s:.0f}",
            f"{r.requests_per_s:.1f}", f"{r.mean_batch:.1f}",
            *(f"{percentile(r.latencies, q):.3f}" for q in (50, 95, 99)),
            *(f"{percentile(r.ttfts, q):.3f}" if r.ttfts else "-" for q in (50, 95)),
            f"{r.tokens_per_s / single.tokens_per_s:.2f}",
            f"{r.tokens_per_s / raw.tokens_per_s:.0%}",
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                  enumerate(zip(r, widths, strict=True)))
        for r in rows
    )


async def bench_model(
    label: str, checkpoint: Checkpoint, inputs: list[TaskInput], args: argparse.Namespace
) -> str:
    params = DecodingParams(
        max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, ignore_eos=True
    )
    base = dict(device=args.device, dtype=args.dtype, max_new_tokens=max(args.new_tokens, 1),
                default_max_new_tokens=max(args.new_tokens, 1))
    batched = EngineConfig(max_batch_sequences=args.max_batch, **base)
    one = EngineConfig(max_batch_sequences=1, **base)
    single = await drive_engine("one-at-a-time", checkpoint, one, inputs, params, 16,
                                max(1, args.baseline_requests // 16))
    single.name = "engine max_batch=1"
    results = []
    for clients in args.clients:
        per_client = max(1, args.requests // clients)
        r = await drive_engine(label, checkpoint, batched, inputs, params, clients, per_client)
        r.name = "engine"
        results.append(r)
    raw = raw_generate(checkpoint, inputs, params, args.repeats)
    return f"== {label} ({args.new_tokens} new tokens per request)\n" + format_table(
        results, raw, single
    )


def random_checkpoint(shape: BenchShape, seed: int) -> tuple[Checkpoint, list[TaskInput]]:
    tokenizer, words = synthetic_tokenizer(seed)
    model = build_model(shape, seed)
    ckpt = Checkpoint(model=model, tokenizer=tokenizer, manifest={"name": "random"})
    inputs = make_inputs(tokenizer, words, 256, shape.min_source_len, shape.max_source_len, seed)
    return ckpt, inputs


def shipped_inputs(ckpt: Checkpoint, seed: int) -> list[TaskInput]:
    tokenizer, words = synthetic_tokenizer(seed)
    del tokenizer
    return make_inputs(ckpt.tokenizer, words, 256, 8, 48, seed)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="sora bench engine", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT),
                   help="checkpoint to serve (skipped when missing; 'none' to skip)")
    p.add_argument("--shape", default="small", choices=[*SHAPES, "none"],
                   help="random-weight model shape ('none' to skip)")
    p.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")],
                   default=[1, 16, 64], help="concurrent clients, comma-separated")
    p.add_argument("--requests", type=int, default=128, help="requests per client count")
    p.add_argument("--baseline-requests", type=int, default=32,
                   help="requests for the one-at-a-time baseline")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--max-batch", type=int, default=64, help="engine max_batch_sequences")
    p.add_argument("--repeats", type=int, default=3, help="raw generate repeats (median)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    if args.checkpoint != "none":
        path = Path(args.checkpoint)
        if (path / "manifest.json").is_file():
            ckpt = load_checkpoint(path)
            print(asyncio.run(bench_model(ckpt.name, ckpt, shipped_inputs(ckpt, args.seed), args)))
        else:
            print(f"(no checkpoint at {path}: skipped)")
    if args.shape != "none":
        ckpt, inputs = random_checkpoint(SHAPES[args.shape], args.seed)
        print(asyncio.run(bench_model(f"random {args.shape}", ckpt, inputs, args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
