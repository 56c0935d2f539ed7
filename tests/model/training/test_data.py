"""The offline data builder, on a real excerpt of Debian's DDTP lists, and the user readers."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest

from model.training.data import cli
from model.training.data.build import BuildConfig, assign_splits, build_debian, split_of
from model.training.data.debian import (
    Description,
    Lists,
    dependency_names,
    load_lists,
    source_name,
    translation_language,
)
from model.training.data.examples import aligned_sentences, keep_pair
from model.training.data.formats import load_examples
from model.training.data.qa import TEMPLATES, answer_examples
from model.training.data.records import (
    AnswerRecord,
    SummarizeRecord,
    TranslateRecord,
    read_jsonl,
)
from model.training.data.text import join_lines, segments, split_sentences

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "debian"
# Large held-out fractions so that 34 source packages fill every split.
CONFIG = BuildConfig(valid_frac=0.25, test_frac=0.25, seed=0)


@pytest.fixture(scope="module")
def lists() -> Lists:
    return load_lists(FIXTURE)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data") / "debian"
    build_debian(FIXTURE, out, CONFIG)
    return out


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- parsing ---------------------------------------------------------------------------


def test_parses_lz4_translations_and_plain_packages(lists: Lists) -> None:
    assert sorted(lists.descriptions) == ["de", "en", "es", "fr", "zh_CN"]
    assert len(lists.descriptions["en"]) == 41  # 43 packages; two descriptions are shared
    assert sum(len(names) for names in lists.packages_by_md5.values()) == 43
    assert len(lists.descriptions["de"]) == len(lists.descriptions["fr"]) == 38
    assert len(lists.control) == 43
    md5 = lists.control["0ad"]["Description-md5"]
    assert md5 == "d943033bedada21853d2ae54a2578a7b"
    assert lists.descriptions["en"][md5].synopsis == "Real-time strategy game of ancient warfare"
    assert lists.descriptions["de"][md5].synopsis == (
        "Echtzeit-Strategiespiel über antike Kriegsführung"
    )
    assert lists.control["0ad"]["Homepage"] == "https://play0ad.com/"


def test_description_paragraphs_keep_verbatim_indent() -> None:
    value = "synopsis here\nFirst para line one\nline two.\n.\nLead:\n * item one\n * item two"
    desc = Description.parse(value)
    assert desc.synopsis == "synopsis here"
    assert desc.paragraphs == (
        ("First para line one", "line two."),
        ("Lead:", " * item one", " * item two"),
    )
    assert segments(desc.paragraphs[1]) == ["Lead:", "* item one", "* item two"]


def test_source_and_dependency_fields(lists: Lists) -> None:
    assert lists.source_of("libexpat1-dev") == "expat"
    assert lists.source_of("libjpeg62-turbo") == "libjpeg-turbo"
    assert lists.source_of("0ad") == "0ad"  # no Source field: the package is its source
    assert source_name("libfoo1", {"Source": "foo (1.2-3)"}) == "foo"
    assert dependency_names("libc6 (>= 2.34), a | b, c:any, libc6") == ["libc6", "a", "c"]
    path = FIXTURE / "deb.debian.org_debian_dists_bookworm_main_i18n_Translation-zh%5fCN.lz4"
    assert translation_language(path) == "zh_CN"


# --- text and alignment ----------------------------------------------------------------


def test_sentence_splitter() -> None:
    assert split_sentences("It works, e.g. Foo does. Then it stops! Really?") == [
        "It works, e.g. Foo does.",
        "Then it stops!",
        "Really?",
    ]
    assert split_sentences("Er kann z. B. Bilder laden. Das ist gut.", "de") == [
        "Er kann z. B. Bilder laden.",
        "Das ist gut.",
    ]
    assert split_sentences("它是游戏。你需要滑动！真的吗？好", "zh_CN") == [
        "它是游戏。", "你需要滑动！", "真的吗？", "好",
    ]  # fmt: skip
    # Chinese is wrapped mid-word: no space between CJK characters, one before Latin.
    assert (
        join_lines(["基于历史的战争/经", "济游戏", "ARJ 工具"])
        == "基于历史的战争/经济游戏 ARJ 工具"
    )


def test_aligned_paragraph_sentences(lists: Lists) -> None:
    md5 = lists.control["2048-qt"]["Description-md5"]
    en, de = lists.descriptions["en"][md5], lists.descriptions["de"][md5]
    pairs = list(aligned_sentences(en, de, "de"))
    assert pairs[0] == ("mathematics based puzzle game", "Mathematik-Rätselspiel")
    assert pairs[2] == (
        "You have to merge the similar number tiles (2n) by moving the arrow keys in four "
        "different directions.",
        "Sie müssen die Kacheln mit gleichen Zahlen (2n) vereinen, indem Sie die Pfeiltasten in "
        "vier verschiedene Richtungen bewegen.",
    )
    # Different paragraph counts: only the synopsis pair is produced.
    other = Description("Übergangspaket", (("Eins.",), ("Zwei.",), ("Drei.",), ("Vier.",)))
    assert list(aligned_sentences(en, other, "de")) == [
        ("mathematics based puzzle game", "Übergangspaket")
    ]


def test_pair_filters() -> None:
    assert not keep_pair("GNU Bourne Again SHell", "GNU Bourne Again SHell", "en", "de", 3.0)
    assert not keep_pair("", "x", "en", "de", 3.0)
    assert not keep_pair("Tiny.", "A much, much longer sentence than the source.", "en", "de", 3.0)
    assert not keep_pair("1.2", "1,2", "en", "de", 3.0)
    # Seven Chinese characters weigh about as much as 21 Latin ones.
    assert keep_pair("transitional package", "过渡软件包", "en", "zh_CN", 3.0)


# --- splits, leakage, dedupe -----------------------------------------------------------


def test_split_is_by_source_package(built: Path, lists: Lists) -> None:
    assert split_of("expat", 0.25, 0.25) == "train"
    assert split_of("nspr", 0.25, 0.25) == "test"
    seen: dict[str, str] = {}
    for split in ("train", "valid", "test"):
        for task in ("translate", "summarize", "answer"):
            for rec in _jsonl(built / f"{task}.{split}.jsonl"):
                source = lists.source_of(rec["package"])
                assert seen.setdefault(source, split) == split, rec["package"]
    # lib and -dev siblings of one source share a split.
    assert seen["nspr"] == "test"
    packages = {r["package"] for r in _jsonl(built / "answer.test.jsonl")}
    assert {"libnspr4", "libnspr4-dev"} <= packages


def test_every_split_has_data_and_no_leakage(built: Path) -> None:
    for task, field in (("translate", "source"), ("summarize", "source"), ("answer", "question")):
        splits = {s: _jsonl(built / f"{task}.{s}.jsonl") for s in ("train", "valid", "test")}
        assert all(splits.values()), task
        if task == "answer":
            inputs = {
                s: {(r["question"], r["context"]) for r in recs} for s, recs in splits.items()
            }
        else:
            inputs = {s: {r[field] for r in recs} for s, recs in splits.items()}
        assert not inputs["train"] & (inputs["valid"] | inputs["test"]), task
        assert not inputs["valid"] & inputs["test"], task


def test_shared_boilerplate_stays_out_of_training(built: Path) -> None:
    # Both the test-split nspr family and the training-split libaccounts-qt family say
    # they contain development files; only held-out copies may remain.
    train = {r["source"] for r in _jsonl(built / "translate.train.jsonl")}
    held = {r["source"] for s in ("valid", "test") for r in _jsonl(built / f"translate.{s}.jsonl")}
    assert "Dieses Paket enthält die Entwicklungsdateien." in held | train
    assert not train & held


def test_assign_splits_dedupes_and_drops_leaks() -> None:
    recs = [
        TranslateRecord("Hello.", "Hallo.", "en", "de", "a"),
        TranslateRecord("Hello.", "Hallo.", "en", "de", "a"),  # exact duplicate
        TranslateRecord("Hello.", "Servus.", "en", "de", "b"),  # same input, held out
        TranslateRecord("Bye.", "Tschüss.", "en", "de", "a"),
    ]
    splits = assign_splits(recs, lambda p: {"a": "train", "b": "test"}[p], seed=0)
    assert [r.source for r in splits["train"]] == ["Bye."]
    assert [r.target for r in splits["test"]] == ["Servus."]  # type: ignore[union-attr]
    assert splits["valid"] == []


# --- records and files -----------------------------------------------------------------


def test_translate_both_directions_and_languages(built: Path) -> None:
    recs = [r for s in ("train", "valid", "test") for r in _jsonl(built / f"translate.{s}.jsonl")]
    pairs = {(r["src_lang"], r["tgt_lang"]) for r in recs}
    assert pairs == {(a, b) for x in ("de", "fr", "es", "zh") for a, b in (("en", x), (x, "en"))}
    forward = {(r["source"], r["target"]) for r in recs if r["tgt_lang"] == "de"}
    backward = {(r["target"], r["source"]) for r in recs if r["src_lang"] == "de"}
    assert forward == backward
    assert ("Real-time strategy game of ancient warfare", "古代战争实时策略游戏") in {
        (r["source"], r["target"]) for r in recs if r["tgt_lang"] == "zh"
    }
    assert all(r["source"] != r["target"] and r["source"] and r["target"] for r in recs)


def test_summaries_need_forty_words(built: Path) -> None:
    recs = [r for s in ("train", "valid", "test") for r in _jsonl(built / f"summarize.{s}.jsonl")]
    assert recs and all(len(r["source"].split()) >= 40 for r in recs)
    by_package = {r["package"]: r for r in recs}
    assert by_package["0ad"]["target"] == "Real-time strategy game of ancient warfare"
    assert by_package["0ad"]["source"].startswith('0 A.D. (pronounced "zero ey-dee") is a free')
    assert "apcalc" not in by_package  # "This is a transitional package. ..." is too short


def test_qa_answers_are_in_their_contexts(built: Path, lists: Lists) -> None:
    recs = [r for s in ("train", "valid", "test") for r in _jsonl(built / f"answer.{s}.jsonl")]
    assert recs and all(r["answer"] and r["answer"] in r["context"] for r in recs)
    assert {r["template"] for r in recs} <= set(TEMPLATES)
    every = list(answer_examples(lists, lambda p: "train", seed=0, per_package=len(TEMPLATES)))
    by_q = {(r.question): r for r in every}
    assert by_q["What is the homepage of 0ad?"].answer == "https://play0ad.com/"
    assert by_q["Which section is 0ad in?"].answer == "games"
    assert by_q["What does 0ad depend on?"].answer == "0ad-data"
    assert by_q["What version of 0ad is this?"].answer == "0.0.26-3"
    assert by_q["What is 0ad?"].answer == "Real-time strategy game of ancient warfare"
    assert by_q["Who maintains 0ad?"].answer == "Debian Games Team"
    which = next(r for r in every if r.template == "which_provides" and r.package == "0ad")
    assert which.question.startswith("Which of these packages provides real-time strategy game")
    assert which.context.count("Package: ") == 3 and which.answer == "0ad"
    assert {r.template for r in every} == set(TEMPLATES)


def test_monolingual_is_training_only(built: Path, lists: Lists) -> None:
    lines = (built / "monolingual.train.txt").read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(set(lines)) > 50
    assert "Echtzeit-Strategiespiel über antike Kriegsführung" in lines  # 0ad: train
    assert "NetScape Portable Runtime Library" not in lines  # nspr: test


def test_manifest_hashes_counts_and_determinism(built: Path, tmp_path: Path) -> None:
    manifest = json.loads((built / "manifest.json").read_text())
    inputs = {i["file"]: i for i in manifest["inputs"]}
    assert len(inputs) == 6
    for path in FIXTURE.glob("deb.*"):
        assert inputs[path.name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert inputs[path.name]["size"] == path.stat().st_size
    assert manifest["params"]["valid_frac"] == 0.25
    for split in ("train", "valid", "test"):
        lines = _jsonl(built / f"translate.{split}.jsonl")
        assert sum(manifest["counts"]["translate"][split].values()) == len(lines)
        assert manifest["counts"]["summarize"][split] == len(
            _jsonl(built / f"summarize.{split}.jsonl")
        )
    # A second build into an existing folder replaces it and is byte-identical.
    again = tmp_path / "again"
    again.mkdir()
    (again / "stale.txt").write_text("old")
    build_debian(FIXTURE, again, CONFIG)
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in built.iterdir())
    for path in built.iterdir():
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name
    assert not list(tmp_path.glob(".again*"))  # no temporary folders left behind


def test_records_round_trip(built: Path) -> None:
    recs = list(read_jsonl(built / "answer.valid.jsonl"))
    assert recs and all(isinstance(r, AnswerRecord) for r in recs)


# --- user formats ----------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


SQUAD = {
    "version": "v2.0",
    "data": [{"title": "T", "paragraphs": [{"context": "Paris is in France.", "qas": [
        {"id": "1", "question": "Where is Paris?",
         "answers": [{"text": "France", "answer_start": 12}]},
        {"id": "2", "question": "Where is Rome?", "answers": [], "is_impossible": True},
    ]}]}],
}  # fmt: skip


def test_squad_v2(tmp_path: Path) -> None:
    path = _write(tmp_path / "squad.json", json.dumps(SQUAD))
    assert load_examples(path) == [
        AnswerRecord("Where is Paris?", "Paris is in France.", "France", "squad", "T")
    ]
    kept = load_examples(path, unanswerable="empty")
    assert [r.answer for r in kept] == ["France", ""]  # type: ignore[union-attr]


def test_squad_errors_name_the_item(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(SQUAD))
    del bad["data"][0]["paragraphs"][0]["qas"][0]["question"]
    path = _write(tmp_path / "bad.json", json.dumps(bad))
    with pytest.raises(
        ValueError,
        match=r"bad\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\]: missing field 'question'",
    ):
        load_examples(path)
    with pytest.raises(ValueError, match=r"not SQuAD JSON"):
        load_examples(_write(tmp_path / "list.json", "[]"))


def test_jsonl_shapes(tmp_path: Path) -> None:
    qa = _write(tmp_path / "qa.jsonl", '{"question": "Q?", "context": "C A", "answer": "A"}\n\n')
    assert load_examples(qa) == [AnswerRecord("Q?", "C A", "A")]
    summ = _write(tmp_path / "s.jsonl", '{"document": "long text", "summary": "short"}\n')
    assert load_examples(summ) == [SummarizeRecord("long text", "short")]
    par = _write(tmp_path / "p.jsonl", '{"source": "Hello", "target": "Hallo"}\n')
    assert load_examples(par, src_lang="en", tgt_lang="de") == [
        TranslateRecord("Hello", "Hallo", "en", "de")
    ]
    assert load_examples(par, task="summarize") == [SummarizeRecord("Hello", "Hallo")]
    with pytest.raises(ValueError, match=r"p\.jsonl:1: .*pass --task"):
        load_examples(par)


def test_tsv_parallel(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.tsv", "Hello\tHallo\n\nGood night\tGute Nacht\n")
    assert load_examples(path, src_lang="en", tgt_lang="de") == [
        TranslateRecord("Hello", "Hallo", "en", "de"),
        TranslateRecord("Good night", "Gute Nacht", "en", "de"),
    ]
    with pytest.raises(ValueError, match="--src-lang and --tgt-lang"):
        load_examples(path)
    bad = _write(tmp_path / "bad.tsv", "a\tb\nonly one column\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:2: expected 'source<TAB>target', got 1"):
        load_examples(bad, src_lang="en", tgt_lang="de")


def test_jsonl_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = _write(tmp_path / "qa.jsonl", '{"question": "Q", "context": "C", "answer": "C"}\n'
                  '{"question": "Q", "answer": "A"}\n')  # fmt: skip
    with pytest.raises(ValueError, match=r"qa\.jsonl:2: missing field 'context'"):
        load_examples(path)
    summ = _write(tmp_path / "s.jsonl", '{"text": "long"}\n')
    with pytest.raises(ValueError, match=r"s\.jsonl:1: missing field 'summary' or 'target'"):
        load_examples(summ)
    broken = _write(tmp_path / "b.jsonl", "{nope\n")
    with pytest.raises(ValueError, match=r"b\.jsonl:1: invalid JSON"):
        load_examples(broken)
    par = _write(tmp_path / "p.jsonl", '{"source": "a", "target": "b", "src_lang": "en"}\n')
    with pytest.raises(ValueError, match=r"p\.jsonl:1: missing field 'tgt_lang'"):
        load_examples(par)


# --- CLI -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sora")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_convert(tmp_path: Path) -> None:
    src = _write(tmp_path / "p.tsv", "Hello\tHallo\n")
    out = tmp_path / "out" / "p.jsonl"
    args = _parser().parse_args(
        ["data", "convert", "--input", str(src), "--out", str(out), "--src-lang", "en",
         "--tgt-lang", "de"]
    )  # fmt: skip
    assert args.func(args) == 0
    assert _jsonl(out) == [
        {"task": "translate", "source": "Hello", "target": "Hallo", "src_lang": "en",
         "tgt_lang": "de", "package": ""}
    ]  # fmt: skip
    args = _parser().parse_args(["data", "convert", "--input", str(src), "--out", str(out)])
    assert args.func(args) == 2  # no languages: a clear error, not a traceback


def test_cli_debian_with_lists(tmp_path: Path) -> None:
    out = tmp_path / "deb"
    args = _parser().parse_args(
        ["data", "debian", "--out", str(out), "--lists", str(FIXTURE), "--pairs", "de",
         "--valid-frac", "0.25", "--test-frac", "0.25"]
    )  # fmt: skip
    assert args.func(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["counts"]["translate"]["train"]) == {"en-de", "de-en"}


def test_sample_split_is_fixed_and_balanced(built: Path, tmp_path: Path) -> None:
    from model.training.data.sample import group_of, sample_split

    a = sample_split(built, tmp_path / "a", split="train", per_group=2, min_per_task=6)
    b = sample_split(built, tmp_path / "b", split="train", per_group=2, min_per_task=6)
    assert a == b
    assert (tmp_path / "a" / "translate.train.jsonl").read_bytes() == (
        tmp_path / "b" / "translate.train.jsonl"
    ).read_bytes()
    full = {}
    for r in read_jsonl(built / "translate.train.jsonl"):
        full.setdefault(group_of(r), 0)
        full[group_of(r)] += 1
    # Every direction present in the build is sampled, with at most 2 (or all) of each.
    assert a["translate"] == {g: min(n, 2) for g, n in full.items()}
    # One group only: the task minimum applies.
    assert a["summarize"] == {"all": 6}
    assert len(_jsonl(tmp_path / "a" / "answer.train.jsonl")) == sum(a["answer"].values())
