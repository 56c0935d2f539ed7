"""An imported BART summarizer: its input and manifest (its logits and generations:
test_parity.py)."""

from __future__ import annotations

import pytest

from model.checkpoint import Checkpoint
from model.tokenizer import TokenizerError

pytest.importorskip("transformers")


def test_input_is_bos_text_eos(bart: Checkpoint) -> None:
    tok = bart.tokenizer
    assert tok.source_ids("summarize", "we like tea") == [0, *tok.encode("we like tea"), 2]
    with pytest.raises(TokenizerError, match="unknown task 'translate'; this model serves "
                                             "summarize"):
        tok.source_ids("translate", "we like tea", "de")


def test_manifest_and_architecture(bart: Checkpoint) -> None:
    m = bart.manifest
    assert (m["architecture"], m["tasks"], m["languages"]) == ("bart", ["summarize"], ["en"])
    assert "language_pairs" not in m
    cfg = bart.model.config
    assert (cfg.norm_placement, cfg.positions, cfg.position_offset) == ("post", "learned", 2)
    assert cfg.embedding_norm and not cfg.final_norms and cfg.bos_id == cfg.eos_id == 2
