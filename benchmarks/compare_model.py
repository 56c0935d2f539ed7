"""Sora vs CTranslate2 vs Hugging Face: greedy generation speed, same shape, same sources.

Run in a separate virtual environment: CTranslate2 and transformers are benchmark-only
and never dependencies of Sora.

    python3 -m venv /work/bench-venv
    /work/bench-venv/bin/pip install torch==2.13.0 ctranslate2 transformers sentencepiece
    /work/bench-venv/bin/pip install -e /work/main
    cd /work/main && /work/bench-venv/bin/python benchmarks/compare_model.py

All three get random weights of one shape (speed depends on shapes only). With
`--family m2m100` (the default) the Hugging Face model is an M2M100 (NLLB)
configuration, the architecture CTranslate2 converts that is closest to Sora's native
one: pre-LayerNorm blocks with final encoder/decoder norms, sinusoidal positions, scaled
and tied embeddings, GELU feed-forward; Sora runs its own model of that shape. With
`--family marian` (OPUS-MT base: d_model 512, 6+6 layers, vocabulary 58101) or
`--family t5` (t5-small: relative attention, ReLU, vocabulary 32128) the random
Hugging Face model is saved with save_pretrained and a tokenizer, and Sora runs what
`sora import hf` makes of that directory, as a user's imported model would run. Either
way CTranslate2 runs what its `TransformersConverter` makes of the same directory (fp32
weights), and both get the same source ids (as tokens of CTranslate2's vocabulary).
Every engine decodes greedily exactly `new_tokens` tokens per source on `threads`
intra-op threads, each in a process of its own, Sora and CTranslate2 in alternation
(each repeat times every engine once, so machine drift hits them alike; Hugging Face,
much slower, runs after them); fp32 by default, and
`--sora-precisions float32,bfloat16,int8 --ct2-compute float32,int8` also compares
each engine's faster CPU modes (CTranslate2 has no bf16 on CPU; Sora's bf16 needs AMX
or AVX512-BF16 to be fast). `--device cuda` runs Sora and Hugging Face on a GPU
(`scripts/gpu_check.sh` does, with `--engines sora,hf`).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from model.checkpoint import load_checkpoint
from model.hf.importer import import_hf

# M2M100's special ids; plain tokens are "t<id>" so source ids map one to one.
HF_BOS, HF_PAD, HF_EOS, HF_UNK = 0, 1, 2, 3

# The real shapes of the imported families (source lengths as the other shapes).
FAMILY_SHAPES = {
    "opus-mt-base": BenchShape(58101, 512, 8, 6, 6, 2048, 8, 48),
    "t5-small": BenchShape(32128, 512, 8, 6, 6, 2048, 8, 48),
}
FAMILIES = {"m2m100": "small", "marian": "opus-mt-base", "t5": "t5-small"}  # default shapes


@dataclass(frozen=True)
class SourceIds:
    """Which ids a family's sources are made of: plain tokens first_id..stop_id-1, then eos."""

    first_id: int
    stop_id: int
    eos: int
    pad: int


def build_m2m100(shape: BenchShape, out_dir: Path, seed: int = 0) -> SourceIds:
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
    return m2m100_ids(shape)


def m2m100_ids(shape: BenchShape) -> SourceIds:
    return SourceIds(HF_UNK + 1, shape.vocab_size, HF_EOS, HF_PAD)


def _fixtures() -> object:
    """The tiny-model helpers of the import tests (tokenizers trained or built in memory)."""
    from tests.model.hf import conftest

    return conftest


def build_marian(shape: BenchShape, out_dir: Path, seed: int = 0) -> SourceIds:
    """A random-weight MarianMT of `shape` as OPUS-MT ships one: a shared source/target
    .spm, vocab.json (the .spm's pieces, then "t<id>" fillers up to the vocabulary size,
    <pad> last) and the language pair in tokenizer_config.json."""
    import sentencepiece
    from transformers import MarianConfig, MarianMTModel

    fx = _fixtures()
    out_dir.mkdir(parents=True)
    fx.train_spm(fx.ENGLISH + fx.GERMAN, out_dir / "source.spm", 80)  # type: ignore[attr-defined]
    shutil.copy(out_dir / "source.spm", out_dir / "target.spm")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(out_dir / "source.spm"))
    pieces = ["</s>", "<unk>"] + [sp.id_to_piece(i) for i in range(sp.get_piece_size())
                                  if not sp.is_unknown(i)]
    pieces += [f"t{i}" for i in range(len(pieces), shape.vocab_size - 1)]
    vocab = {piece: i for i, piece in enumerate([*pieces, "<pad>"])}
    (out_dir / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps({"source_lang": "en", "target_lang": "de"}), encoding="utf-8")
    pad = shape.vocab_size - 1
    config = MarianConfig(
        vocab_size=shape.vocab_size, d_model=shape.d_model, encoder_layers=shape.n_encoder_layers,
        decoder_layers=shape.n_decoder_layers, encoder_attention_heads=shape.n_heads,
        decoder_attention_heads=shape.n_heads, encoder_ffn_dim=shape.d_ff,
        decoder_ffn_dim=shape.d_ff, max_position_embeddings=512, activation_function="swish",
        pad_token_id=pad, eos_token_id=0, decoder_start_token_id=pad, forced_eos_token_id=None,
        bad_words_ids=[[pad]], dropout=0.0,
    )
    fx.save_random(out_dir, MarianMTModel, config, seed=seed, std=0.02)  # type: ignore[attr-defined]
    return SourceIds(2, pad, 0, pad)


def build_t5(shape: BenchShape, out_dir: Path, seed: int = 0) -> SourceIds:
    """A random-weight T5 of `shape` (t5-small's: relative attention, ReLU feed-forward,
    tied embeddings) with a small Unigram tokenizer.json; the ids past it are T5's
    unnamed rows (CTranslate2 names them <extra_id_N>), so sources use the named ones."""
    from transformers import T5Config, T5ForConditionalGeneration

    fx = _fixtures()
    out_dir.mkdir(parents=True)
    tok = fx.sentencepiece_like_tokenizer(["<pad>", "</s>", "<unk>"])  # type: ignore[attr-defined]
    tok.save(str(out_dir / "tokenizer.json"))
    config = T5Config(
        vocab_size=shape.vocab_size, d_model=shape.d_model, d_kv=shape.d_model // shape.n_heads,
        d_ff=shape.d_ff, num_layers=shape.n_encoder_layers,
        num_decoder_layers=shape.n_decoder_layers, num_heads=shape.n_heads,
        dropout_rate=0.0, feed_forward_proj="relu", tie_word_embeddings=True, pad_token_id=0,
        eos_token_id=1, decoder_start_token_id=0,
    )
    fx.save_random(out_dir, T5ForConditionalGeneration, config, seed=seed, std=0.02)  # type: ignore[attr-defined]
    return SourceIds(3, tok.get_vocab_size(), 1, 0)


BUILDERS = {"m2m100": build_m2m100, "marian": build_marian, "t5": build_t5}


def ct2_vocabulary(ct2_dir: Path) -> list[str]:
    """The converted model's (shared or source) vocabulary, id order."""
    for name in ("shared_vocabulary.json", "source_vocabulary.json"):
        if (ct2_dir / name).is_file():
            return list(json.loads((ct2_dir / name).read_text(encoding="utf-8")))
    raise FileNotFoundError(f"{ct2_dir}: no vocabulary json")


# CTranslate2's CPU compute types, and the engine name each one's results carry.
CT2_COMPUTE = {"float32": "ct2", "int8": "ct2-int8", "int8_float32": "ct2-int8f32",
               "int16": "ct2-int16"}


Run = Callable[[list[list[int]]], object]


def ct2_run(model_dir: Path, threads: int, compute_type: str, new_tokens: int) -> Run:
    """Greedy generation of a chunk of sources with CTranslate2 (ids as the tokens its
    vocabulary has at those ids)."""
    import ctranslate2

    vocabulary = ct2_vocabulary(model_dir)
    translator = ctranslate2.Translator(
        str(model_dir), device="cpu", compute_type=compute_type, inter_threads=1,
        intra_threads=threads,
    )

    def run(chunk: list[list[int]]) -> object:
        tokens = [[vocabulary[i] for i in src] for src in chunk]
        out = translator.translate_batch(
            tokens, beam_size=1, min_decoding_length=new_tokens,
            max_decoding_length=new_tokens, return_scores=False,
        )
        lengths = {len(r.hypotheses[0]) for r in out}
        if lengths != {new_tokens}:
            raise RuntimeError(f"CTranslate2 produced lengths {sorted(lengths)}")
        return out

    return run


def _exact(run: Run, new_tokens: int) -> Run:
    """`run`, checked to give every source exactly `new_tokens` tokens."""

    def checked(chunk: list[list[int]]) -> object:
        out = run(chunk)
        lengths = {len(r.token_ids) for r in out}  # type: ignore[attr-defined]
        if lengths != {new_tokens}:
            raise RuntimeError(f"Sora produced lengths {sorted(lengths)}")
        return out

    return checked


def sora_run(shape: BenchShape, precision: str, new_tokens: int, device: str = "cpu") -> Run:
    model = with_precision(build_model(shape), precision, device)
    return _exact(greedy_run(model, new_tokens), new_tokens)


def sora_imported_run(checkpoint: Path, precision: str, new_tokens: int,
                      device: str = "cpu") -> Run:
    """Greedy generation with what `sora import hf` made (loaded as `sora serve` does)."""
    model = with_precision(load_checkpoint(checkpoint).model, precision, device)
    return _exact(greedy_run(model, new_tokens), new_tokens)


def hf_run(model: object, new_tokens: int, device: str = "cpu", pad: int = HF_PAD) -> Run:
    model = model.to(device)  # type: ignore[attr-defined]

    def run(chunk: list[list[int]]) -> object:
        width = max(len(s) for s in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        for i, s in enumerate(chunk):
            ids[i, : len(s)] = torch.tensor(s)
        ids = ids.to(device)
        with torch.inference_mode():
            out = model.generate(  # type: ignore[attr-defined]
                input_ids=ids, attention_mask=ids != pad, do_sample=False, num_beams=1,
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
    p.add_argument("--family", default="m2m100", choices=sorted(FAMILIES),
                   help="m2m100: Sora's own model vs a converted M2M100 of its shape; marian, "
                        "t5: one random Hugging Face model imported by Sora and converted by "
                        "CTranslate2")
    p.add_argument("--shape", choices=sorted({**SHAPES, **FAMILY_SHAPES}),
                   help="default: small for m2m100, opus-mt-base for marian, t5-small for t5")
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
    shape_name = args.shape or FAMILIES[args.family]
    shape = {**SHAPES, **FAMILY_SHAPES}[shape_name]
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    engines = args.engines.split(",")
    # Ratios to CTranslate2 where it runs, else to Sora's first precision.
    reference = (CT2_COMPUTE[ct2_compute[0]] if "ct2" in engines
                 else PRECISIONS[sora_precisions[0]] if "sora" in engines else None)
    print(f"{args.family}, shape {shape_name}: {shape}")
    print(f"{args.num_sources} sources, {args.new_tokens} new tokens each, greedy, "
          f"on {args.device}, {args.threads} threads, median of {args.repeats} (HF fp32: first "
          f"{args.hf_num_sources}); Sora {args.sora_precisions}, CTranslate2 {args.ct2_compute}")

    results: list[BenchResult] = []
    makers: dict[str, Callable[[], Run]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir, ct2_dir, sora_dir = Path(tmp) / "hf", Path(tmp) / "ct2", Path(tmp) / "sora"
        imported = args.family != "m2m100"
        ids = (BUILDERS[args.family](shape, hf_dir) if imported or {"hf", "ct2"} & set(engines)
               else m2m100_ids(shape))
        # Plain tokens only (no specials), eos last: every engine reads them alike.
        sources = make_sources(shape, args.num_sources, seed=0, first_id=ids.first_id,
                               stop_id=ids.stop_id, eos=ids.eos)
        if "sora" in engines:
            if imported:
                import_hf(hf_dir, sora_dir)
            for precision in sora_precisions:
                makers[PRECISIONS[precision]] = (
                    functools.partial(sora_imported_run, sora_dir, precision, args.new_tokens,
                                      args.device) if imported else
                    functools.partial(sora_run, shape, precision, args.new_tokens, args.device))
        if "ct2" in engines:
            import ctranslate2

            ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(str(ct2_dir))
            vocabulary = ct2_vocabulary(ct2_dir)
            used = {i for s in sources for i in s}
            if len({vocabulary[i] for i in used}) != len(used) or \
                    vocabulary.index(vocabulary[ids.eos]) != ids.eos:
                raise RuntimeError("source ids do not map one to one to CTranslate2 tokens")
            for compute_type in ct2_compute:
                makers[CT2_COMPUTE[compute_type]] = functools.partial(
                    ct2_run, ct2_dir, args.threads, compute_type, args.new_tokens
                )
        results += time_interleaved(makers, sources, sizes, args.new_tokens, args.threads,
                                    args.repeats)
        if "hf" in engines:
            from transformers import AutoModelForSeq2SeqLM

            hf_model = AutoModelForSeq2SeqLM.from_pretrained(hf_dir).eval()
            hf = hf_run(hf_model, args.new_tokens, args.device, ids.pad)
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
