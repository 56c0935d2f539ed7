"""evaluate() on a tiny random-weight model: report structure, baselines, recording."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from cli.main import main as sora_main
from model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint, verify_checkpoint
from model.config import SoraConfig
from model.sampling import DecodingParams
from model.sora import Sora
from model.tokenizer import SoraTokenizer
from model.training.data.records import (
    AnswerRecord,
    Record,
    SummarizeRecord,
    TranslateRecord,
    write_jsonl,
)
from model.training.evaluate import (
    EvalReport,
    evaluate,
    first_sentence,
    format_table,
    limit_examples,
    record_in_manifest,
)
from model.training.evaluate_cli import load_records

SAME = "the archive library reads and writes many compressed formats"
RECORDS: list[Record] = [
    TranslateRecord("a tool for editing text files", "ein Werkzeug zum Bearbeiten", "en", "de"),
    TranslateRecord("a small network daemon", "ein kleiner Netzwerkdienst", "en", "de"),
    TranslateRecord("eine Bibliothek", "a library", "de", "en"),
    TranslateRecord("a compression library", "一个压缩库", "en", "zh"),
    # source == reference: copying the source is a perfect translation
    TranslateRecord(SAME, SAME, "en", "it"),
    TranslateRecord(SAME + " quickly", SAME + " quickly", "en", "it"),
    SummarizeRecord("one two three four five six seven eight", "one two three four"),
    SummarizeRecord("alpha beta gamma delta epsilon zeta", "alpha beta gamma delta"),
    AnswerRecord("What is foo?", "Foo is a text editor. It edits text.", "Foo is a text editor.",
                 "what_is"),
    AnswerRecord("What is bar?", "Bar is a daemon! It serves files.", "Bar is a daemon.",
                 "what_is"),
    AnswerRecord("Homepage of foo?", "Homepage: https://foo.org\nSection: editors",
                 "https://foo.org", "homepage"),
]
PARAMS = DecodingParams(strategy="greedy", max_new_tokens=6)


def _texts() -> list[str]:
    out: list[str] = []
    for r in RECORDS:
        if isinstance(r, AnswerRecord):
            out += [r.question, r.context, r.answer]
        else:
            out += [r.source, r.target]
    return out


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    tokenizer = SoraTokenizer.train(_texts() * 3, vocab_size=300)
    config = SoraConfig(vocab_size=tokenizer.vocab_size, d_model=32, n_heads=4,
                        n_encoder_layers=1, n_decoder_layers=1, d_ff=64)
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(path, Sora(config), tokenizer, info={"name": "tiny", "recipe": "test"})
    return path


@pytest.fixture(scope="module")
def checkpoint(checkpoint_dir: Path) -> Checkpoint:
    return load_checkpoint(checkpoint_dir)


@pytest.fixture(scope="module")
def report(checkpoint: Checkpoint) -> EvalReport:
    return evaluate(checkpoint, RECORDS, batch_size=2, params=PARAMS)


def test_report_groups(report: EvalReport) -> None:
    names = [(g.task, g.group) for g in report.groups]
    assert names == [
        ("translate", "de->en"), ("translate", "en->de"), ("translate", "en->it"),
        ("translate", "en->zh"), ("summarize", "all"),
        ("answer", "all"), ("answer", "homepage"), ("answer", "what_is"),
    ]
    assert report.group("translate", "en->de").examples == 2
    assert report.group("answer").examples == 3
    assert report.examples == len(RECORDS)
    assert report.checkpoint == "tiny"
    assert report.weights_sha256 is not None and len(report.weights_sha256) == 64
    assert report.decoding["max_new_tokens"] == 6
    for g in report.groups:
        assert set(g.scores) == set(g.baseline)
        assert all(0.0 <= v <= 100.0 for v in [*g.scores.values(), *g.baseline.values()])
    assert set(report.group("translate", "en->de").scores) == {"bleu", "chrf"}
    assert set(report.group("summarize").scores) == {"rouge1", "rouge2", "rougeL"}
    assert set(report.group("answer").scores) == {"exact_match", "f1"}
    with pytest.raises(KeyError):
        report.group("translate", "fr->en")


def test_baselines_real_values(report: EvalReport) -> None:
    copy = report.group("translate", "en->it")
    assert copy.baseline == pytest.approx({"bleu": 100.0, "chrf": 100.0})
    assert copy.baseline_name == "copy the source"
    assert report.group("translate", "en->de").baseline["bleu"] < 100.0
    summary = report.group("summarize")
    assert summary.baseline_name == "first 4 words of the source"
    assert summary.baseline == pytest.approx(
        {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    )
    assert report.group("answer", "what_is").baseline["exact_match"] == 100.0
    homepage = report.group("answer", "homepage").baseline
    assert homepage["exact_match"] == 0.0
    assert homepage["f1"] == pytest.approx(100 * 2 * 0.5 / 1.5)  # "homepage", "httpsfooorg"
    assert report.group("answer").baseline["exact_match"] == pytest.approx(200 / 3)


def test_teacher_forcing(report: EvalReport, checkpoint: Checkpoint) -> None:
    forced = {t.task: t for t in report.teacher_forcing}
    assert list(forced) == ["translate", "summarize", "answer"]
    tok = checkpoint.tokenizer
    summaries = [r.target for r in RECORDS if isinstance(r, SummarizeRecord)]
    assert forced["summarize"].tokens == sum(len(tok.encode(t)) + 1 for t in summaries)
    for t in forced.values():
        # random weights over ~300 tokens: loss near log(vocab)
        assert 0 < t.loss < 3 * math.log(tok.vocab_size)
        assert t.perplexity == pytest.approx(math.exp(t.loss))
        assert 0.0 <= t.token_accuracy <= 100.0


def test_report_is_json_and_table_readable(report: EvalReport) -> None:
    data = json.loads(json.dumps(report.to_dict()))
    assert data["groups"][0]["task"] == "translate"
    assert data["teacher_forcing"][0]["task"] == "translate"
    table = format_table(report)
    for text in ("en->zh", "BLEU", "chrF", "ROUGE-L", "EM", "F1", "copy the source",
                 "first 4 words", "perplexity", "baseline"):
        assert text in table
    assert "100.00" in table


def test_max_examples_covers_every_direction(checkpoint: Checkpoint) -> None:
    translations = [r for r in RECORDS if isinstance(r, TranslateRecord)]
    picked = [r for r in limit_examples(translations, 4) if isinstance(r, TranslateRecord)]
    directions = {f"{r.src_lang}->{r.tgt_lang}" for r in picked}
    assert len(picked) == 4
    assert directions == {"en->de", "de->en", "en->zh", "en->it"}
    small = evaluate(checkpoint, RECORDS, batch_size=8, params=PARAMS, max_examples=1)
    assert [(g.task, g.group) for g in small.groups] == [
        ("translate", "en->de"), ("summarize", "all"), ("answer", "all"), ("answer", "what_is"),
    ]
    assert small.examples == 3


def test_beam_decoding_runs(checkpoint: Checkpoint) -> None:
    params = DecodingParams(strategy="beam", beam_size=2, max_new_tokens=4)
    r = evaluate(checkpoint, RECORDS[:2], batch_size=4, params=params)
    assert r.decoding["strategy"] == "beam"
    assert r.group("translate", "en->de").examples == 2


def test_first_sentence() -> None:
    assert first_sentence("Foo is a tool. It does bar.") == "Foo is a tool."
    assert first_sentence("Homepage: x\nSection: y") == "Homepage: x"
    assert first_sentence("no end") == "no end"


def test_record_in_manifest_round_trip(
    checkpoint_dir: Path, report: EvalReport, tmp_path: Path
) -> None:
    path = shutil.copytree(checkpoint_dir, tmp_path / "tiny")
    before = verify_checkpoint(path)
    record_in_manifest(path, report)
    after = verify_checkpoint(path)  # the hashed files are untouched
    assert after["evaluation"] == json.loads(json.dumps(report.to_dict()))
    assert {k: v for k, v in after.items() if k != "evaluation"} == before
    record_in_manifest(path, report, key="evaluation_test")
    assert set(verify_checkpoint(path)) == {*before, "evaluation", "evaluation_test"}
    assert load_checkpoint(path).manifest["name"] == "tiny"
    assert [p.name for p in path.iterdir() if p.name.startswith(".")] == []


def test_load_records_dir_and_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for task in ("translate", "answer"):
        write_jsonl(data / f"{task}.test.jsonl", [r for r in RECORDS if r.task == task])
    assert len(load_records(data, "test", ["translate", "summarize", "answer"])) == 9
    assert {r.task for r in load_records(data, "test", ["answer"])} == {"answer"}
    with pytest.raises(FileNotFoundError):
        load_records(data, "valid", ["translate"])
    one = tmp_path / "all.jsonl"
    write_jsonl(one, RECORDS)
    assert len(load_records(one, "ignored", ["summarize"])) == 2
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "missing.jsonl", "test", ["answer"])


def test_cli_eval_writes_json_and_records(
    checkpoint_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = shutil.copytree(checkpoint_dir, tmp_path / "tiny")
    data = tmp_path / "records.jsonl"
    write_jsonl(data, RECORDS)
    out = tmp_path / "results.json"
    rc = sora_main(["eval", "--checkpoint", str(ckpt), "--data", str(data), "--tasks",
                    "translate", "answer", "--max-new-tokens", "4", "--batch-size", "4",
                    "--device", "cpu", "--dtype", "float32", "--out", str(out), "--record"])
    assert rc == 0
    assert "copy the source" in capsys.readouterr().out
    results = json.loads(out.read_text(encoding="utf-8"))
    assert {g["task"] for g in results["groups"]} == {"translate", "answer"}
    assert verify_checkpoint(ckpt)["evaluation"]["groups"] == results["groups"]


def test_cli_eval_reports_bad_input(tmp_path: Path, checkpoint_dir: Path) -> None:
    assert sora_main(["eval", "--checkpoint", str(checkpoint_dir),
                      "--data", str(tmp_path / "nope")]) == 2
