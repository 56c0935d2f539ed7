"""End to end on the tiny recipe: tokenizer -> pretrain -> finetune -> adversarial -> final,
run once per session by the `tiny_run` fixture (a real `sora train` subprocess)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.checkpoint import load_checkpoint
from model.generation import generate
from model.sampling import DecodingParams
from model.tokenizer import N_SENTINELS, SoraTokenizer
from model.training.batching import TokenTable, shard, token_budget_batches
from model.training.data.records import SummarizeRecord, TranslateRecord
from model.training.finetune import encode_records, read_split
from model.training.plot import read_metrics
from model.training.pretrain import noise_counts, span_corrupt
from model.training.recipe import load_recipe
from model.training.trainer import lr_at

STAGES = ("pretrain", "finetune", "adversarial")


def test_every_stage_writes_a_loadable_checkpoint(tiny_run: Path) -> None:
    assert (tiny_run / "tokenizer" / "tokenizer.json").is_file()
    for stage in (*STAGES, "final"):
        ckpt = load_checkpoint(tiny_run / stage)  # verifies every file's sha256
        assert ckpt.model.config.max_source_positions == 64
        assert (tiny_run / stage / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = load_checkpoint(tiny_run / "final")
    src = ckpt.tokenizer.source_ids("translate", "a library for images", target_lang="de")
    out = generate(ckpt.model, ckpt.tokenizer, [src], DecodingParams(max_new_tokens=8))
    assert len(out[0].token_ids) <= 8


def test_final_manifest_carries_the_provenance(tiny_run: Path) -> None:
    info = json.loads((tiny_run / "final" / "manifest.json").read_text())
    assert info["recipe"]["name"] == "sora-tiny"
    assert info["recipe"]["model"]["d_model"] == 32
    assert info["data"]["inputs"] and info["data"]["counts"]  # DATA/manifest.json
    assert set(info["stages"]) == set(STAGES)
    for stage in STAGES:
        s = info["stages"][stage]
        assert s["steps"] > 0 and "valid_loss" in s["validation"]
    assert set(info["wall_seconds"]) >= {"tokenizer", *STAGES}
    adv = info["adversarial"]
    assert adv["kept"] in ("finetune", "adversarial")
    assert info["selected_stage"] == adv["kept"]
    for side in ("before", "after"):
        assert "translate_bleu" in adv[side]["scores"]
    assert info["tokenizer"]["vocab_size"] > 256


def test_metrics_and_learning(tiny_run: Path) -> None:
    rows = read_metrics(tiny_run / "metrics.jsonl")
    for stage in STAGES:
        train = [r for r in rows if r["stage"] == stage and r["kind"] == "train"]
        valid = [r for r in rows if r["stage"] == stage and r["kind"] == "valid"]
        assert train and valid
        assert all(np.isfinite(r["loss"]) and r["tokens_per_s"] > 0 for r in train)
    pre = [r["loss"] for r in rows if r["stage"] == "pretrain" and r["kind"] == "train"]
    assert pre[-1] < pre[0]  # even six steps move a fresh model
    adv = [r for r in rows if r["stage"] == "adversarial" and r["kind"] == "train"]
    assert all(0 <= r["reward"] <= 1 and "disc_loss" in r for r in adv)


def test_schedule_warmup_and_decay() -> None:
    s = load_recipe("tiny").finetune  # cosine, warmup 2, 6 steps, floor 0.1
    lrs = [lr_at(i, s) for i in range(6)]
    assert lrs[0] < lrs[1] == pytest.approx(s.lr)
    assert lrs[2] > lrs[3] > lrs[4] > lrs[5] >= s.lr * s.min_lr_ratio
    p = load_recipe("tiny").pretrain  # inverse sqrt after warmup
    assert lr_at(7, p) == pytest.approx(p.lr * (2 / 8) ** 0.5)


def test_span_corruption_roundtrip() -> None:
    rng = np.random.default_rng(0)
    tokens = np.arange(100, 160, dtype=np.int32)
    noise, spans = noise_counts(np.asarray([60]), 0.15, 3.0)
    sentinels = list(range(10, 10 + N_SENTINELS))
    src, tgt = span_corrupt(tokens, int(noise[0]), int(spans[0]), sentinels, 2, rng)
    assert src[-1] == 2 and len(src) == 60 - noise[0] + spans[0] + 1
    assert len(tgt) == noise[0] + spans[0]
    # putting the spans back gives the original line
    pieces: dict[int | None, list[int]] = {}
    cur = None
    for t in tgt:
        if t in sentinels:
            cur = t
            pieces[cur] = []
        else:
            pieces[cur].append(t)
    rebuilt = [x for t in src[:-1] for x in (pieces[t] if t in sentinels else [t])]
    assert rebuilt == tokens.tolist()


def test_token_budget_batches_are_deterministic_and_within_budget() -> None:
    rng = np.random.default_rng(1)
    src = rng.integers(2, 60, 500)
    tgt = rng.integers(1, 40, 500)
    a = token_budget_batches(np.arange(500), src, tgt, 512, np.random.default_rng(5))
    b = token_budget_batches(np.arange(500), src, tgt, 512, np.random.default_rng(5))
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert sorted(np.concatenate(a).tolist()) == list(range(500))
    for rows in a:
        assert len(rows) * (src[rows].max() + tgt[rows].max() + 1) <= 512
        parts = [shard(rows, r, 2) for r in range(2)]
        assert not set(parts[0]) & set(parts[1])
        assert sorted([*parts[0], *parts[1]]) == sorted(rows.tolist())


def test_batch_encoding_matches_serving_inputs(tiny_run: Path, tiny_data: Path) -> None:
    tok = SoraTokenizer.from_file(tiny_run / "tokenizer" / "tokenizer.json")
    records = read_split(tiny_data, "valid", ["translate", "summarize", "answer"], 3)
    ex = encode_records(tok, records, 10_000, 10_000)
    for i, r in enumerate(records):
        if isinstance(r, TranslateRecord):
            want = tok.source_ids("translate", r.source, target_lang=r.tgt_lang)
        elif isinstance(r, SummarizeRecord):
            want = tok.source_ids("summarize", r.source)
        else:
            want = tok.source_ids("answer", r.question, context=r.context)
        assert ex.src[i].tolist() == want
    assert isinstance(ex.src, TokenTable) and len(ex) == len(records)

