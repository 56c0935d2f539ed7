"""An imported T5 / Flan-T5: its text prefixes and manifest (its logits and
generations: test_parity.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from model.checkpoint import Checkpoint, load_checkpoint
from model.hf.importer import import_hf
from model.tokenizer import TokenizerError

pytest.importorskip("transformers")


def test_prefixes(flan: Checkpoint) -> None:
    tok = flan.tokenizer
    eos = [tok.token_id("</s>")]
    assert tok.source_ids("translate", "we like tea", "de", source_lang="en") == \
        tok.encode("translate English to German: we like tea") + eos
    # T5 translates from English only: the source is inferred from the target.
    assert tok.source_ids("translate", "we like tea", "de") == \
        tok.encode("translate English to German: we like tea") + eos
    assert tok.source_ids("summarize", "we like tea") == tok.encode("summarize: we like tea") + eos
    assert tok.source_ids("answer", "who", context="we like tea") == \
        tok.encode("question: who context: we like tea") + eos


def test_a_source_it_cannot_infer(flan: Checkpoint) -> None:
    with pytest.raises(TokenizerError, match="this model needs source_lang to translate into "
                                             "'en'"):
        flan.tokenizer.source_ids("translate", "wir mögen tee", "en")


def test_manifest(flan: Checkpoint, t5: Checkpoint) -> None:
    m = flan.manifest
    assert m["architecture"] == "t5"
    assert m["tasks"] == ["answer", "summarize", "translate"]
    assert m["languages"] == ["de", "en", "fr", "ro"]
    assert m["language_pairs"] == [["en", "de"], ["en", "fr"], ["en", "ro"]]
    assert flan.model.config.activation == "gated-gelu"
    assert flan.model.config.d_attention == 12  # 2 heads of 6, d_model 16
    assert t5.model.config.activation == "relu"


def test_untied_lm_head_as_released_flan_t5_saves_it(
    flan_dir: Path, flan_hf: torch.nn.Module, tmp_path: Path
) -> None:
    """Released Flan-T5 / T5 v1.1 checkpoints have their own lm_head.weight and
    tie_word_embeddings false (no output scale). transformers 5 ties it on load, so the
    reference is its decoder output (lm_head's input) times that separate matrix."""
    src = Path(shutil.copytree(flan_dir, tmp_path / "flan-untied"))
    cfg = json.loads((src / "config.json").read_text())
    cfg["tie_word_embeddings"] = False
    cfg.pop("scale_decoder_outputs", None)
    (src / "config.json").write_text(json.dumps(cfg))
    weights = load_file(str(src / "model.safetensors"))
    g = torch.Generator().manual_seed(7)
    head = torch.randn(cfg["vocab_size"], cfg["d_model"], generator=g)
    save_file({**weights, "lm_head.weight": head}, str(src / "model.safetensors"))
    ckpt = load_checkpoint(import_hf(src, tmp_path / "out"))
    assert not ckpt.model.config.tie_embeddings
    tok = ckpt.tokenizer
    ids = torch.tensor([tok.source_ids("summarize", "we like tea")])
    tgt = torch.tensor([[0, *tok.encode("wir mögen")]])
    seen: list[torch.Tensor] = []
    hook = flan_hf.lm_head.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        flan_hf(input_ids=ids, decoder_input_ids=tgt)
        ours = ckpt.model(ids, tgt).logits
    hook.remove()
    torch.testing.assert_close(ours, seen[0] @ head.T, rtol=0, atol=1e-4)
