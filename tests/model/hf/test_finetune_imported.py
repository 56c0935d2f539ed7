"""Fine-tuning imported models (`init_from`): tiny OPUS-MT-style Marian checkpoints (bare
text in, a target-side tokenizer of their own; one with separate source and target
vocabularies and embeddings), a tiny T5 (a "translate English to German:"
prefix), a tiny NLLB (language codes, the target's forced first) and a tiny mBART-cc25
(the target's code the decoder's start, wrapped round to close the labels) are trained on the
user's parallel TSV in their own input formats; their loss falls, they keep their
declaration and format, and they serve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from cli.main import main as cli_main
from model.checkpoint import Checkpoint, load_checkpoint
from model.generation import generate
from model.sampling import DecodingParams
from model.training.data.records import read_jsonl
from model.training.evaluate import evaluate
from service.engine import EngineConfig, TaskInput
from service.engine.registry import ModelRegistry
from tests.model.hf.conftest import ENGLISH, GERMAN

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module", params=["marian", "marian_sep", "t5", "nllb", "mbart_cc25"])
def imported(request: pytest.FixtureRequest) -> Checkpoint:
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def tuned(imported: Checkpoint, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imported-ft")
    pairs = sorted(set(zip(ENGLISH, GERMAN, strict=True)))
    for split, rows in (("train", pairs), ("valid", pairs[:4])):
        tsv = root / f"{split}.tsv"
        tsv.write_text("".join(f"{en}\t{de}\n" for en, de in rows), encoding="utf-8")
        assert cli_main(["--log-level", "WARNING", "data", "convert", "--input", str(tsv),
                         "--src-lang", "en", "--tgt-lang", "de", "--out",
                         str(root / "data" / f"translate.{split}.jsonl")]) == 0
    out = root / "run"
    cmd = [sys.executable, "-m", "cli.main", "--log-level", "WARNING", "train", "tiny",
           "--data", str(root / "data"), "--out", str(out), "--no-progress",
           "--stages", "finetune", "--set", f"init_from={imported.path}",
           "--set", "finetune.mixture={translate: 1.0}", "--set", "finetune.max_steps=12",
           "--set", "finetune.lr=0.01"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_imported_model_learns_the_users_pairs(tuned: Path, imported: Checkpoint) -> None:
    records = list(read_jsonl(tuned.parent / "data" / "translate.train.jsonl"))
    params = DecodingParams(max_new_tokens=2)
    [before] = evaluate(imported, records, params=params).teacher_forcing
    [after] = evaluate(load_checkpoint(tuned / "final"), records, params=params).teacher_forcing
    assert after.loss < before.loss - 0.5, (before.loss, after.loss)


async def test_the_tuned_model_keeps_its_format_and_serves(
    tuned: Path, imported: Checkpoint
) -> None:
    manifest = json.loads((tuned / "final" / "manifest.json").read_text(encoding="utf-8"))
    for key in ("architecture", "tasks", "languages", "language_pairs", "prompting"):
        assert manifest.get(key) == imported.manifest.get(key), key
    if imported.tokenizer.target is not None:  # Marian's own target vocabulary
        tuned_target = Tokenizer.from_file(str(tuned / "final" / "target_tokenizer.json"))
        assert tuned_target.get_vocab() == imported.tokenizer.target.get_vocab()
    registry = ModelRegistry(tuned / "final", EngineConfig(device="cpu", compile="off",
                                                           warmup=False))
    await registry.load_all()
    params = DecodingParams(max_new_tokens=8)
    try:
        inp = TaskInput("translate", "the cat sat on the mat", target_lang="de",
                        source_lang="en")
        done = await registry.route([inp]).generate(inp, params)
    finally:
        await registry.drain(timeout=10.0)
    # The engine serves exactly what the fine-tuned checkpoint generates on its own.
    ckpt = load_checkpoint(tuned / "final")
    src = ckpt.tokenizer.source_ids("translate", inp.text, target_lang="de", source_lang="en")
    forced = ckpt.tokenizer.forced_ids("translate", "de")  # NLLB's target code
    [alone] = generate(ckpt.model, ckpt.tokenizer, [src], params, forced=[forced])
    assert (done.model, done.text, done.completion_tokens) == (
        "final", alone.text, len(alone.token_ids))
