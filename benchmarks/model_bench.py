"""Greedy-generation throughput of a random-weight Sora model (`sora bench model`).

Random weights are enough: speed depends on shapes, not on what the weights say, and
`ignore_eos` makes every source produce exactly `new_tokens` tokens. Sources are random
ids of random lengths from a seeded generator, so every run (and the comparison with
CTranslate2 / Hugging Face in `benchmarks/compare_model.py`) sees the same inputs.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch

from model.config import SoraConfig
from model.device import prepare_for_inference
from model.generation import generate
from model.prompting import Prompting
from model.sampling import DecodingParams
from model.sora import Sora
from model.tokenizer import SoraTokenizer


@dataclass(frozen=True)
class BenchShape:
    vocab_size: int
    d_model: int
    n_heads: int
    n_encoder_layers: int
    n_decoder_layers: int
    d_ff: int
    min_source_len: int
    max_source_len: int

    def config(self) -> SoraConfig:
        return SoraConfig(
            vocab_size=self.vocab_size,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_encoder_layers=self.n_encoder_layers,
            n_decoder_layers=self.n_decoder_layers,
            d_ff=self.d_ff,
            dropout=0.0,
        )


SHAPES = {
    "small": BenchShape(8000, 256, 4, 3, 3, 1024, 8, 48),
    "base": BenchShape(32000, 512, 8, 6, 6, 2048, 8, 48),
}


@dataclass
class BenchResult:
    name: str
    batch_size: int
    tokens: int  # generated tokens per repeat
    seconds: list[float]  # wall time of each repeat

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.median_s


def make_sources(shape: BenchShape, n: int, seed: int = 0, first_id: int = 3,
                 stop_id: int | None = None, eos: int = 2) -> list[list[int]]:
    """`n` random sources of min..max_source_len ids (first_id up to stop_id, default the
    vocabulary's end; `eos` last), seeded."""
    rng = random.Random(seed)
    stop = stop_id or shape.vocab_size
    out = []
    for _ in range(n):
        length = rng.randint(shape.min_source_len, shape.max_source_len)
        out.append([rng.randrange(first_id, stop) for _ in range(length - 1)] + [eos])
    return out


def build_model(shape: BenchShape, seed: int = 0) -> Sora:
    torch.manual_seed(seed)
    return Sora(shape.config()).eval()


# Precisions the CPU benchmarks compare: what `sora serve --dtype/--quantize-int8/--compile`
# runs, and the engine name each one's results carry.
PRECISIONS = {"float32": "sora", "float32-compiled": "sora-compiled", "bfloat16": "sora-bf16",
              "bfloat16-compiled": "sora-bf16-compiled", "int8": "sora-int8"}


def parse_precisions(text: str) -> list[str]:
    """A comma-separated list of precisions; ValueError names the choices."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values or not set(values) <= set(PRECISIONS):
        raise ValueError(f"expected some of {', '.join(PRECISIONS)}, got {text!r}")
    return values


def with_precision(model: Sora, precision: str, device: str = "cpu") -> Sora:
    """A copy of `model` on `device` in `precision`, laid out as the engine serves it:
    float32 (on CPU, decoder weights column-major), bfloat16 (fast where the CPU has AMX
    / AVX512-BF16, and on GPUs), either one `-compiled` (encoder and decode steps through
    torch.compile; compiled and warmed up here, before any timing), or int8 (dynamic
    quantization of the linear layers, CPU only)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    copy = Sora(model.config).eval()
    copy.load_state_dict(model.state_dict())
    dtype = torch.bfloat16 if precision.startswith("bfloat16") else torch.float32
    copy = copy.to(device=device, dtype=dtype)
    return prepare_for_inference(copy, quantize=precision == "int8",
                                 compile="wait" if precision.endswith("-compiled") else "off")


class _NoText:
    """Stands in for the tokenizer: the benchmark times ids, not detokenization."""

    prompting = Prompting()  # Sora's own: the decoder starts from bos

    def decode_batch(self, batch: list[list[int]], skip_special: bool = True) -> list[str]:
        return [""] * len(batch)


def time_batches(
    run: Callable[[list[list[int]]], object],
    sources: list[list[int]],
    batch_size: int,
    repeats: int,
) -> list[float]:
    """Wall seconds of `repeats` passes of `run` over `sources` in chunks of batch_size."""
    chunks = [sources[i : i + batch_size] for i in range(0, len(sources), batch_size)]
    run(chunks[0])  # warm-up: allocator, kernels, lazy init
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for chunk in chunks:
            run(chunk)
        times.append(time.perf_counter() - start)
    return times


def greedy_run(model: Sora, new_tokens: int) -> Callable[[list[list[int]]], object]:
    """Greedy generation of exactly `new_tokens` per source for a chunk of sources, with
    no sequence log-probability (as CTranslate2's return_scores=False and Hugging Face)."""
    params = DecodingParams(max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                            ignore_eos=True, return_logprob=False)
    tokenizer = cast(SoraTokenizer, _NoText())
    return lambda chunk: generate(model, tokenizer, chunk, params)


def bench_sora(
    model: Sora,
    sources: list[list[int]],
    batch_sizes: list[int],
    new_tokens: int,
    repeats: int = 3,
    name: str = "sora",
) -> list[BenchResult]:
    run = greedy_run(model, new_tokens)
    return [
        BenchResult(name, bs, len(sources) * new_tokens, time_batches(run, sources, bs, repeats))
        for bs in batch_sizes
    ]


def format_table(results: list[BenchResult], reference: str | None = None) -> str:
    """Rows per batch size, one tokens/s column per engine, plus ratios to `reference`."""
    names = list(dict.fromkeys(r.name for r in results))
    sizes = sorted({r.batch_size for r in results})
    by = {(r.name, r.batch_size): r for r in results}
    head = ["batch", *(f"{n} tok/s" for n in names)]
    others = [n for n in names if reference and n != reference]
    head += [f"{n}/{reference}" for n in others]
    rows = [head]
    for bs in sizes:
        row = [str(bs)]
        for n in names:
            r = by.get((n, bs))
            row.append(f"{r.tokens_per_s:.0f}" if r else "-")
        for n in others:
            a, b = by.get((n, bs)), by.get((reference or "", bs))
            row.append(f"{a.tokens_per_s / b.tokens_per_s:.2f}" if a and b else "-")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
