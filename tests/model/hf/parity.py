"""Sora against transformers on the same imported model: teacher-forced logits and
generate()'s tokens."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import torch

from model.checkpoint import Checkpoint
from model.generation import generate, pad_batch
from model.sampling import DecodingParams
from service.engine.config import EngineConfig
from service.engine.engine import Engine

CPU = torch.device("cpu")


def hf_batch(sources: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = pad_batch(sources, pad, CPU)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(sources):
        mask[i, : len(s)] = 1
    return ids, mask


def assert_logits_match(ckpt: Checkpoint, hf: torch.nn.Module, sources: list[list[int]],
                        targets: list[list[int]]) -> None:
    """Teacher-forced logits of every real target position, fp32, within 1e-4."""
    cfg = ckpt.model.config
    src, src_mask = hf_batch(sources, cfg.pad_id)
    tgt_lists = [[cfg.bos_id, *t] for t in targets]
    tgt, tgt_mask = hf_batch(tgt_lists, cfg.pad_id)
    with torch.no_grad():
        ours = ckpt.model(src, tgt).logits
        theirs = hf(input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt,
                    decoder_attention_mask=tgt_mask).logits
    for i, t in enumerate(tgt_lists):
        torch.testing.assert_close(ours[i, : len(t)], theirs[i, : len(t)], rtol=0, atol=1e-4)


def hf_generate(hf: torch.nn.Module, sources: list[list[int]], pad: int, eos: int,
                max_new_tokens: int, beams: int, forced: int | None = None,
                start: int | None = None) -> list[list[int]]:
    """transformers' tokens after the decoder start (`start`: in place of the config's),
    up to eos; `forced`: forced_bos_token_id."""
    src, mask = hf_batch(sources, pad)
    # Passed as None, decoder_start_token_id would fall back to bos, not the config's.
    starts = {} if start is None else {"decoder_start_token_id": start}
    with torch.no_grad():
        out = hf.generate(input_ids=src, attention_mask=mask, max_new_tokens=max_new_tokens,
                          num_beams=beams, do_sample=False, early_stopping=True,
                          length_penalty=1.0, num_return_sequences=1,
                          forced_bos_token_id=forced, **starts)
    rows = []
    for row in out.tolist():
        row = row[1:]  # the decoder start token
        if eos in row:
            row = row[: row.index(eos)]
        rows.append([t for t in row if t != pad])
    return rows


def sora_generate(ckpt: Checkpoint, sources: list[list[int]], max_new_tokens: int,
                  beams: int, forced: int | None = None) -> list[list[int]]:
    params = DecodingParams(strategy="beam" if beams > 1 else "greedy", beam_size=max(beams, 2),
                            max_new_tokens=max_new_tokens, early_stopping=True)
    first = [[] if forced is None else [forced]] * len(sources)
    return [r.token_ids for r in generate(ckpt.model, ckpt.tokenizer, sources, params, first)]


@contextlib.asynccontextmanager
async def cpu_engine(ckpt: Checkpoint, name: str) -> AsyncIterator[Engine]:
    """An in-process engine over `ckpt` (CPU, no warmup or compiling), drained after."""
    config = EngineConfig(warmup=False, device="cpu", compile="off", max_batch_sequences=6)
    engine = Engine(ckpt, config, name=name)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.drain(timeout=10.0)
