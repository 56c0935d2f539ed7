"""`init_from`: fine-tune an existing checkpoint on the user's own data formats (parallel
TSV, summarization JSONL, SQuAD, converted by `sora data convert`), keeping its tokenizer,
shape and serving declaration; the result serves. Bad `init_from` values fail clearly."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from cli.main import main as cli_main
from model.checkpoint import load_checkpoint, save_checkpoint
from model.sampling import DecodingParams
from model.sora import Sora
from model.tokenizer import SoraTokenizer
from model.training.data.records import read_jsonl
from model.training.evaluate import evaluate
from model.training.pipeline import RunError, load_base
from model.training.recipe import RecipeError, check_data, load_recipe
from service.engine import EngineConfig, TaskInput
from service.engine.registry import ModelRegistry

ROOT = Path(__file__).resolve().parents[3]
# What the base checkpoint declares: a single-direction translator that also summarizes.
DECLARED = {"tasks": ["translate", "summarize", "answer"], "languages": ["en", "de"],
            "language_pairs": [["en", "de"]]}
TrainCli = Callable[..., subprocess.CompletedProcess[str]]


def _convert(src: Path, out: Path, *args: str) -> None:
    """`sora data convert` (in this process: six interpreters would cost seconds)."""
    argv = ["--log-level", "WARNING", "data", "convert", "--input", str(src), "--out",
            str(out), *args]
    assert cli_main(argv) == 0


def _user_files(fixture: Path, split: str, into: Path) -> dict[str, Path]:
    """The fixture's records as a user has them: TSV, summarization JSONL, SQuAD JSON."""

    def rows(task: str) -> list[dict[str, str]]:
        with (fixture / f"{task}.{split}.jsonl").open(encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    into.mkdir(parents=True, exist_ok=True)
    tsv, docs, squad = (into / f"{name}.{split}{ext}" for name, ext in
                        (("en-de", ".tsv"), ("docs", ".jsonl"), ("squad", ".json")))
    tsv.write_text("".join(f"{p['source']}\t{p['target']}\n" for p in rows("translate")
                           if (p["src_lang"], p["tgt_lang"]) == ("en", "de")),
                   encoding="utf-8")
    docs.write_text("".join(json.dumps({"text": r["source"], "summary": r["target"]}) + "\n"
                            for r in rows("summarize")), encoding="utf-8")
    paragraphs = [
        {"context": q["context"], "qas": [{"id": str(i), "question": q["question"], "answers": [
            {"text": q["answer"], "answer_start": q["context"].find(q["answer"])}]}]}
        for i, q in enumerate(rows("answer"))
    ]
    squad.write_text(json.dumps({"version": "v2.0", "data": [
        {"title": "fixture", "paragraphs": paragraphs}]}), encoding="utf-8")
    return {"translate": tsv, "summarize": docs, "answer": squad}


@pytest.fixture(scope="module")
def user_data(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path) -> Path:
    """A data directory made by `sora data convert` from the user's own formats."""
    root = tmp_path_factory.mktemp("user")
    data = root / "data"
    for split in ("train", "valid"):
        files = _user_files(tiny_data, split, root / "raw")
        _convert(files["translate"], data / f"translate.{split}.jsonl",
                 "--src-lang", "en", "--tgt-lang", "de")
        _convert(files["summarize"], data / f"summarize.{split}.jsonl")
        _convert(files["answer"], data / f"answer.{split}.jsonl")
    return data


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, tiny_model: Sora,
         tiny_tokenizer: SoraTokenizer) -> Path:
    path = tmp_path_factory.mktemp("base") / "base"
    return save_checkpoint(path, tiny_model, tiny_tokenizer, info={"name": "base", **DECLARED})


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory, train_cli: TrainCli, base: Path,
          user_data: Path) -> Path:
    out = tmp_path_factory.mktemp("tuned") / "run"
    # The default stages include tokenizer and pretrain: init_from leaves them out.
    train_cli("tiny", "--data", str(user_data), "--out", str(out),
              "--stages", "tokenizer,pretrain,finetune", "--set", f"init_from={base}",
              "--set", "finetune.max_steps=12", "--set", "finetune.lr=0.01")
    return out


def test_fine_tuning_lowers_the_loss_on_the_users_data(
    tuned: Path, base: Path, user_data: Path
) -> None:
    records = [r for task in ("translate", "summarize", "answer")
               for r in read_jsonl(user_data / f"{task}.train.jsonl")]
    def losses(path: Path) -> dict[str, float]:
        report = evaluate(load_checkpoint(path), records, max_examples=24,
                          params=DecodingParams(max_new_tokens=2))
        return {t.task: t.loss for t in report.teacher_forcing}

    before, after = losses(base), losses(tuned / "final")
    assert set(before) == set(after) == {"translate", "summarize", "answer"}
    for task in before:
        assert after[task] < before[task] - 0.5, (task, before[task], after[task])


def test_the_result_keeps_tokenizer_shape_and_declaration(tuned: Path, base: Path) -> None:
    assert not (tuned / "tokenizer").exists() and not (tuned / "pretrain").exists()
    old, new = load_checkpoint(base), load_checkpoint(tuned / "final")
    assert (tuned / "final" / "tokenizer.json").read_bytes() == \
        (base / "tokenizer.json").read_bytes()
    assert new.model.config == replace(old.model.config, dropout=0.1)  # the recipe's
    manifest = new.manifest
    assert {k: manifest[k] for k in DECLARED} == DECLARED
    assert manifest["init_from"]["name"] == "base"
    assert manifest["init_from"]["path"] == str(base.resolve())
    assert manifest["stages"]["finetune"]["steps"] == 12


async def test_the_result_serves(tuned: Path) -> None:
    registry = ModelRegistry(tuned / "final", EngineConfig(device="cpu", compile="off",
                                                           warmup=False))
    await registry.load_all()
    try:
        [info] = registry.list()
        assert info.language_pairs == (("en", "de"),)
        inp = TaskInput("translate", "A library for images.", target_lang="de",
                        source_lang="en")
        engine = registry.route([inp])
        done = await engine.generate(inp, DecodingParams(max_new_tokens=6))
        assert done.model == "final" and 1 <= done.completion_tokens <= 6
    finally:
        await registry.drain(timeout=10.0)


def test_resume_refuses_another_init_from(
    tuned: Path, base: Path, train_cli: TrainCli, tmp_path: Path
) -> None:
    other = shutil.copytree(base, tmp_path / "other")
    proc = train_cli("tiny", "--out", str(tuned), "--resume", "--stages", "finetune",
                     "--set", f"init_from={other}", "--data", str(ROOT / "tests/fixtures/"
                                                                  "train-tiny"), check=False)
    assert proc.returncode == 1
    assert "the recipe changed init_from" in proc.stderr


def test_a_missing_checkpoint_is_refused_before_training(
    train_cli: TrainCli, tiny_data: Path, tmp_path: Path
) -> None:
    proc = train_cli("tiny", "--data", str(tiny_data), "--out", str(tmp_path / "run"),
                     "--set", f"init_from={tmp_path / 'nowhere'}", check=False)
    assert proc.returncode == 2
    assert f"init_from: {tmp_path / 'nowhere'} is not a checkpoint directory" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_corrupted_checkpoint_is_refused(base: Path, tmp_path: Path, tiny_data: Path) -> None:
    bad = shutil.copytree(base, tmp_path / "bad")
    weights = bytearray((bad / "model.safetensors").read_bytes())
    weights[-10] ^= 0xFF
    (bad / "model.safetensors").write_bytes(bytes(weights))
    recipe = load_recipe("tiny", {"init_from": str(bad), "data_dir": str(tiny_data)})
    check_data(recipe, ("finetune",))  # it is a checkpoint directory ...
    with pytest.raises(RunError, match=r"init_from: .*model\.safetensors: sha256 mismatch"):
        load_base(recipe)  # ... whose weights do not verify


def test_a_checkpoint_that_does_not_fit_the_recipe_is_refused(
    tmp_path: Path, tiny_model: Sora, tiny_tokenizer: SoraTokenizer
) -> None:
    narrow = save_checkpoint(tmp_path / "narrow", tiny_model, tiny_tokenizer,
                             info={"tasks": ["translate"]})
    recipe = load_recipe("tiny", {"init_from": str(narrow), "max_source_len": 128})
    with pytest.raises(RunError) as err:
        load_base(recipe)
    assert str(err.value) == (
        f"init_from: max_source_len is 128 but {narrow} has 64 positions; "
        f"finetune.mixture.summarize: {narrow} does not serve summarize (it serves "
        f"translate); finetune.mixture.answer: {narrow} does not serve answer (it serves "
        "translate)")


def test_init_from_must_be_a_string() -> None:
    with pytest.raises(RecipeError, match="init_from: expected a string"):
        load_recipe("tiny", {"init_from": 3})
    assert load_recipe("tiny").init_from == ""
