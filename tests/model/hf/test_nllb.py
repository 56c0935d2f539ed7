"""Imported NLLB (M2M100 architecture) and mBART-50: language codes in, the target's
code forced first out (their logits and generations: test_parity.py)."""

from __future__ import annotations

import sys

import pytest
import torch

from cli.main import main
from model.checkpoint import Checkpoint
from model.generation import generate
from model.sampling import DecodingParams
from model.tokenizer import TokenizerError
from tests.model.hf.parity import hf_generate

pytest.importorskip("transformers")


def test_source_codes_and_forced_target(nllb: Checkpoint) -> None:
    tok = nllb.tokenizer
    code = tok.token_id
    assert tok.source_ids("translate", "we like tea", "de", source_lang="en") == \
        [code("eng_Latn"), *tok.encode("we like tea"), code("</s>")]
    # No source language given: served without its code (NLLB cannot detect it).
    assert tok.source_ids("translate", "we like tea", "de") == \
        [*tok.encode("we like tea"), code("</s>")]
    assert tok.forced_ids("translate", "de") == [code("deu_Latn")]
    assert tok.forced_ids("summarize", None) == []
    with pytest.raises(TokenizerError, match="unsupported target language 'it'; expected one "
                                             "of de, en, fr"):
        tok.source_ids("translate", "we like tea", "it")


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_outputs_start_with_the_forced_code(nllb: Checkpoint, strategy: str) -> None:
    tok = nllb.tokenizer
    src = [tok.source_ids("translate", "we like tea", lang, source_lang="en")
           for lang in ("de", "fr")]
    forced = [tok.forced_ids("translate", lang) for lang in ("de", "fr")]
    results = generate(nllb.model, tok, src, DecodingParams(strategy=strategy, max_new_tokens=6),
                       forced)
    assert [r.token_ids[0] for r in results] == [f[0] for f in forced]
    assert all("_Latn" not in r.text for r in results)  # codes are special: not in the text


def test_manifest(nllb: Checkpoint) -> None:
    m = nllb.manifest
    assert (m["architecture"], m["tasks"], m["languages"]) == ("nllb", ["translate"],
                                                               ["de", "en", "fr"])
    assert "language_pairs" not in m  # any two of its languages
    cfg = nllb.model.config
    assert (cfg.norm_placement, cfg.positions, cfg.position_offset) == \
        ("pre", "sinusoidal-fairseq", 2)
    assert cfg.final_norms and not cfg.final_logits_bias and cfg.bos_id == cfg.eos_id


def test_sora_generate_forces_the_target_code(
    nllb: Checkpoint, nllb_hf: torch.nn.Module, capsys: pytest.CaptureFixture[str]
) -> None:
    assert nllb.path is not None
    assert main(["generate", "--checkpoint", str(nllb.path), "--target-lang", "fr",
                 "--source-lang", "en", "--max-new-tokens", "8", "we like tea"]) == 0
    tok, cfg = nllb.tokenizer, nllb.model.config
    src = [tok.source_ids("translate", "we like tea", "fr", source_lang="en")]
    want = hf_generate(nllb_hf, src, cfg.pad_id, cfg.eos_id, 8, 1, tok.token_id("fra_Latn"))
    assert capsys.readouterr().out == tok.decode(want[0]) + "\n"


def test_mbart50_codes(mbart: Checkpoint) -> None:
    tok = mbart.tokenizer
    assert tok.source_ids("translate", "we like tea", "de", source_lang="en") == \
        [tok.token_id("en_XX"), *tok.encode("we like tea"), tok.token_id("</s>")]
    assert tok.forced_ids("translate", "fr") == [tok.token_id("fr_XX")]
    m = mbart.manifest
    assert (m["architecture"], m["languages"]) == ("mbart", ["de", "en", "fr"])
    cfg = mbart.model.config
    assert (cfg.norm_placement, cfg.positions, cfg.embedding_norm, cfg.final_norms) == \
        ("pre", "learned", True, True)


GENERATE = ["generate", "--target-lang", "fr", "--max-new-tokens", "8"]


def test_sora_generate_detects_a_missing_source_language(
    nllb: Checkpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    # As the server's REST and gRPC front ends do: each text's own language, over the
    # model's; left out, the source code would be missing from the input. --verbose: the
    # score too, which the source code changes where this tiny model's text may not.
    pytest.importorskip("py3langid")
    texts = {"en": "the weather is nice today", "de": "die kinder singen ein lied"}
    args = [*GENERATE, "--verbose", "--checkpoint", str(nllb.path)]
    assert main([*args, *texts.values()]) == 0
    detected = capsys.readouterr().out
    explicit = ""
    for lang, text in texts.items():
        assert main([*args, "--source-lang", lang, text]) == 0
        explicit += capsys.readouterr().out
    assert detected == explicit
    assert main([*args, "--source-lang", "de", texts["en"]]) == 0
    assert capsys.readouterr().out != explicit.splitlines(keepends=True)[0]


def test_sora_generate_refuses_an_unserved_language(
    nllb: Checkpoint, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("py3langid")
    assert main([*GENERATE, "--checkpoint", str(nllb.path), "今日はいい天気ですね"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: detected language 'ja' (confidence ")
    assert err.endswith(") is not served; served languages: de, en, fr\n")


def test_sora_generate_without_detection_needs_the_source(
    nllb: Checkpoint, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service import langdetect

    for name in ("py3langid", "py3langid.langid"):  # not installed (no serve extra)
        monkeypatch.setitem(sys.modules, name, None)
    langdetect.detector_for.cache_clear()
    langdetect._load.cache_clear()
    assert main([*GENERATE, "--checkpoint", str(nllb.path), "we like tea"]) == 2
    assert capsys.readouterr().err == (
        "error: --source-lang is required for this model: it reads de, en, fr (or pip "
        "install 'sora[serve]' to detect it from the text)\n")
