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


def test_default_checkpoint_computes_as_before_format_version_2() -> None:
    """The shipped checkpoint is format version 1; read as version 2 (every architecture
    field at its default) it computes the logits and greedy outputs the code before
    version 2 computed (recorded from it)."""
    import torch

    from model.generation import generate, pad_batch

    ckpt = load_checkpoint(DEFAULT_MODEL_REPOSITORY)
    assert ckpt.manifest["format_version"] == 1
    tok = ckpt.tokenizer
    sources = [tok.source_ids("translate", "The cat sat on the mat.", "de"),
               tok.source_ids("summarize", "A short text about nothing at all.")]
    src = pad_batch(sources, 0, torch.device("cpu"))
    tgt = pad_batch([[1, 5, 6, 7], [1, 8]], 0, torch.device("cpu"))
    with torch.no_grad():
        logits = ckpt.model(src, tgt).logits
    expected = torch.tensor([
        [-0.5283298492431641, 3.5186519622802734, 0.6211377382278442, -0.5288896560668945],
        [-2.287449598312378, -2.597353935241699, 0.39055559039115906, -2.288735866546631],
        [-2.1527915000915527, -0.8355797529220581, -0.30579203367233276, -2.1548547744750977],
        [-2.0631279945373535, 0.05366012454032898, -0.10342168807983398, -2.0650229454040527],
    ])
    torch.testing.assert_close(logits[0, :, :4], expected, rtol=0, atol=1e-5)
    outputs = generate(ckpt.model, tok, sources, DecodingParams(max_new_tokens=12))
    assert [r.token_ids for r in outputs] == [
        [4206, 499, 307, 307, 842, 2192, 1286, 499, 459, 3899, 44], [1492, 43, 1023, 1010]
    ]
