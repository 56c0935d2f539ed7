"""Sora vs CTranslate2 vs Hugging Face: greedy generation speed, same shape, same sources.

Run in a separate virtual environment: CTranslate2 and transformers are benchmark-only
and never dependencies of Sora.

    python3 -m venv /work/bench-venv
    /work/bench-venv/bin/pip install torch==2.13.0 ctranslate2 transformers sentencepiece
    /work/bench-venv/bin/pip install -e /work/main
    cd /work/main && /work/bench-venv/bin/python benchmarks/compare_model.py

All three get random weights of one shape (speed depends on shapes only). The Hugging
Face model is an M2M100 (NLLB) configuration, the architecture CTranslate2 converts that
is closest to Sora's: pre-LayerNorm blocks with final encoder/decoder norms, sinusoidal
positions, scaled and tied embeddings, GELU feed-forward. It is converted to CTranslate2
(fp32 weights) with `TransformersConverter`. Every engine decodes greedily exactly
`new_tokens` tokens per source on `threads` intra-op threads, each in a process of its
own, Sora and CTranslate2 in alternation (each repeat times every engine once, so machine
drift hits them alike; Hugging Face, much slower, runs after them); fp32 by default, and
`--sora-precisions float32,bfloat16,int8 --ct2-compute float32,int8` also compares each
engine's faster CPU modes (CTranslate2 has no bf16 on CPU; Sora's bf16 needs AMX or
AVX512-BF16 to be fast). `--device cuda` runs Sora and Hugging Face on a GPU
(`scripts/gpu_check.sh` does, with `--engines sora,hf`).
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.model_bench import (
    PRECISIONS,
    SHAPES,
    BenchResult,
    BenchShape,
    build_model,
    format_table,
    greedy_run,
    make_sources,
    parse_precisions,
    time_batches,
    with_precision,
)

# M2M100's special ids; plain tokens are "t<id>" so source ids map one to one.
HF_BOS, HF_PAD, HF_EOS, HF_UNK = 0, 1, 2, 3


def build_hf(shape: BenchShape, out_dir: Path, seed: int = 0) -> object:
    """A random-weight M2M100 of `shape` saved with a word-level tokenizer to `out_dir`."""
    from tokenizers import Tokenizer, models
    from transformers import (
        M2M100Config,
        M2M100ForConditionalGeneration,
        PreTrainedTokenizerFast,
    )

    config = M2M100Config(
        vocab_size=shape.vocab_size,
        d_model=shape.d_model,
        encoder_layers=shape.n_encoder_layers,
        decoder_layers=shape.n_decoder_layers,
        encoder_attention_heads=shape.n_heads,
        decoder_attention_heads=shape.n_heads,
        encoder_ffn_dim=shape.d_ff,
        decoder_ffn_dim=shape.d_ff,
        activation_function="gelu",
        scale_embedding=True,
        max_position_embeddings=256,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        bos_token_id=HF_BOS,
        pad_token_id=HF_PAD,
        eos_token_id=HF_EOS,
        decoder_start_token_id=HF_EOS,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = M2M100ForConditionalGeneration(config).eval()
    model.save_pretrained(out_dir)
    vocab = {"<s>": HF_BOS, "<pad>": HF_PAD, "</s>": HF_EOS, "<unk>": HF_UNK}
    vocab.update({f"t{i}": i for i in range(4, shape.vocab_size)})
    tok = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="<unk>")),
        bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
    )
    tok.save_pretrained(out_dir)
    return model


# CTranslate2's CPU compute types, and the engine name each one's results carry.
CT2_COMPUTE = {"float32": "ct2", "int8": "ct2-int8", "int8_float32": "ct2-int8f32",
               "int16": "ct2-int16"}


Run = Callable[[list[list[int]]], object]


def ct2_run(model_dir: Path, threads: int, compute_type: str, new_tokens: int) -> Run:
    """Greedy generation of a chunk of sources with CTranslate2 (ids as "t<id>" tokens)."""
    import ctranslate2

    translator = ctranslate2.Translator(
        str(model_dir), device="cpu", compute_type=compute_type, inter_threads=1,
        intra_threads=threads,
    )

    def run(chunk: list[list[int]]) -> object:
        tokens = [[f"t{i}" if i >= 4 else "</s>" for i in src] for src in chunk]
        out = translator.translate_batch(
            tokens, beam_size=1, min_decoding_length=new_tokens,
            max_decoding_length=new_tokens, return_scores=False,
        )
        lengths = {len(r.hypotheses[0]) for r in out}
        if lengths != {new_tokens}:
            raise RuntimeError(f"CTranslate2 produced lengths {sorted(lengths)}")
        return out

    return run


def sora_run(shape: BenchShape, precision: str, new_tokens: int, device: str = "cpu") -> Run:
    return greedy_run(with_precision(build_model(shape), precision, device), new_tokens)


def hf_run(model: object, new_tokens: int, device: str = "cpu") -> Run:
    model = model.to(device)  # type: ignore[attr-defined]

    def run(chunk: list[list[int]]) -> object:
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), HF_PAD, dtype=torch.long)
        for i, s in enumerate(chunk):
            ids[i, : len(s)] = torch.tensor(s)
        ids = ids.to(device)
        with torch.inference_mode():
            out = model.generate(  # type: ignore[attr-defined]
                input_ids=ids, attention_mask=ids != HF_PAD, do_sample=False, num_beams=1,
                max_new_tokens=new_tokens, min_new_tokens=new_tokens,
            )
        assert out.shape[1] == new_tokens + 1, out.shape  # decoder start + new tokens
        return out.cpu()  # waits for the device, as Sora's token lists do

    return run


def _worker(conn: Connection, make: Callable[[], Run], threads: int,
            sources: list[list[int]]) -> None:
    """One engine in its own process: time one pass over `sources` per request."""
    torch.set_num_threads(threads)
    run = make()
    while (batch_size := conn.recv()) is not None:
        conn.send(time_batches(run, sources, batch_size, repeats=1)[0])


def time_interleaved(
    makers: dict[str, Callable[[], Run]], sources: list[list[int]], sizes: list[int],
    new_tokens: int, threads: int, repeats: int,
) -> list[BenchResult]:
    """Each engine runs in a process of its own (their OpenMP pools would otherwise spin
    against each other on two cores), and each repeat times every engine once in turn,
    so that the drift of a shared machine (30% within minutes here) hits all alike."""
    ctx = multiprocessing.get_context("spawn")
    workers = {}
    for name, make in makers.items():
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(child, make, threads, sources), daemon=True)
        proc.start()
        workers[name] = (parent, proc)
    results = []
    try:
        for bs in sizes:
            seconds: dict[str, list[float]] = {name: [] for name in makers}
            for _ in range(repeats):
                for name, (conn, _) in workers.items():
                    conn.send(bs)
                    seconds[name].append(conn.recv())
                    time.sleep(0.5)  # let the engine's threads go idle before the next
            results += [BenchResult(n, bs, len(sources) * new_tokens, s)
                        for n, s in seconds.items()]
    finally:
        for conn, proc in workers.values():
            conn.send(None)
            proc.join(timeout=30)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="1,16,64")
    p.add_argument("--shape", default="small", choices=sorted(SHAPES))
    p.add_argument("--num-sources", type=int, default=256)
    p.add_argument("--hf-num-sources", type=int, default=64,
                   help="Hugging Face is slow at batch 1: time it on the first N sources")
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu",
                   help="where Sora and Hugging Face run (cpu, cuda); CTranslate2 runs on CPU")
    p.add_argument("--engines", default="sora,ct2,hf")
    p.add_argument("--sora-precisions", default="float32",
                   help=f"comma-separated, of {', '.join(PRECISIONS)}")
    p.add_argument("--ct2-compute", default="float32",
                   help=f"comma-separated CTranslate2 compute types, of {', '.join(CT2_COMPUTE)}")
    args = p.parse_args()
    try:
        sora_precisions = parse_precisions(args.sora_precisions)
    except ValueError as e:
        p.error(f"--sora-precisions: {e}")
    ct2_compute = args.ct2_compute.split(",")
    if not set(ct2_compute) <= set(CT2_COMPUTE):
        p.error(f"--ct2-compute takes {', '.join(CT2_COMPUTE)}, got {args.ct2_compute!r}")

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    shape = SHAPES[args.shape]
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    engines = args.engines.split(",")
    # Ratios to CTranslate2 where it runs, else to Sora's first precision.
    reference = (CT2_COMPUTE[ct2_compute[0]] if "ct2" in engines
                 else PRECISIONS[sora_precisions[0]] if "sora" in engines else None)
    # Ids from 4 up: every engine reads them as plain tokens (M2M100 reserves 0-3).
    sources = make_sources(shape, args.num_sources, seed=0, first_id=4)
    print(f"shape {args.shape}: {shape}")
    print(f"{len(sources)} sources, {args.new_tokens} new tokens each, greedy, "
          f"on {args.device}, {args.threads} threads, median of {args.repeats} (HF fp32: first "
          f"{args.hf_num_sources}); Sora {args.sora_precisions}, CTranslate2 {args.ct2_compute}")

    results: list[BenchResult] = []
    makers: dict[str, Callable[[], Run]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir, ct2_dir = Path(tmp) / "hf", Path(tmp) / "ct2"
        hf_model = build_hf(shape, hf_dir) if {"hf", "ct2"} & set(engines) else None
        if "sora" in engines:
            for precision in sora_precisions:
                makers[PRECISIONS[precision]] = functools.partial(
                    sora_run, shape, precision, args.new_tokens, args.device
                )
        if "ct2" in engines:
            import ctranslate2

            ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(str(ct2_dir))
            for compute_type in ct2_compute:
                makers[CT2_COMPUTE[compute_type]] = functools.partial(
                    ct2_run, ct2_dir, args.threads, compute_type, args.new_tokens
                )
        results += time_interleaved(makers, sources, sizes, args.new_tokens, args.threads,
                                    args.repeats)
        if "hf" in engines:
            hf = hf_run(hf_model, args.new_tokens, args.device)
            for bs in sizes:
                results.append(BenchResult(
                    "hf", bs, args.hf_num_sources * args.new_tokens,
                    time_batches(hf, sources[: args.hf_num_sources], bs, args.repeats),
                ))
    print()
    print(format_table(results, reference=reference))
    return 0


if __name__ == "__main__":
    sys.exit(main())
