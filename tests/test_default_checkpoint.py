"""The shipped default checkpoint: intact, still as good as recorded, README true."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.checkpoint import load_checkpoint, verify_checkpoint
from model.sampling import DecodingParams
from service.config import DEFAULT_MODEL_REPOSITORY

EVAL_DATA = Path(__file__).resolve().parent.parent / "data" / "eval"
TOLERANCE = 1.0  # points (BLEU, chrF, ROUGE, EM, F1 are percentages)

pytestmark = pytest.mark.skipif(
    not (DEFAULT_MODEL_REPOSITORY / "manifest.json").is_file(),
    reason="the default checkpoint has not been committed yet",
)


def test_default_checkpoint_verifies() -> None:
    manifest = verify_checkpoint(DEFAULT_MODEL_REPOSITORY)
    assert manifest["dtype"] in ("float16", "bfloat16", "float32")
    for key in ("recipe", "data", "evaluation", "regression"):
        assert key in manifest, key
    size = sum(f.stat().st_size for f in DEFAULT_MODEL_REPOSITORY.iterdir())
    assert size < 50 * 2**20


def test_default_checkpoint_scores_at_least_the_recorded_figures() -> None:
    """Re-run the recorded regression evaluation; every score may drop by TOLERANCE."""
    from model.training.evaluate import evaluate
    from model.training.evaluate_cli import load_records

    ckpt = load_checkpoint(DEFAULT_MODEL_REPOSITORY)
    recorded = ckpt.manifest["regression"]
    records = load_records(EVAL_DATA, "test", ("translate", "summarize", "answer"))
    report = evaluate(
        ckpt,
        records,
        batch_size=32,
        params=DecodingParams(max_new_tokens=recorded["max_new_tokens"]),
        max_examples=recorded["max_examples"],
    )
    seen = 0
    for group in recorded["groups"]:
        now = report.group(group["task"], group["group"])
        assert now.examples == group["examples"]
        for key, value in group["scores"].items():
            assert now.scores[key] >= value - TOLERANCE, (group["task"], group["group"], key)
            seen += 1
    assert seen >= 10


def test_readme_examples_are_real_outputs() -> None:
    from readme_examples import README, current_block, render

    assert current_block(README.read_text(encoding="utf-8")) == render()
