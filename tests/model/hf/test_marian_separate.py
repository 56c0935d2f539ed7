"""An imported Marian model with separate source and target vocabularies
(share_encoder_decoder_embeddings false, target_vocab.json): each side's text and ids as
MarianTokenizer(separate_vocabs=True) makes them, the decoder's own embedding and
vocabulary, and shared-vocabulary checkpoints unchanged (logits and generations against
transformers: test_parity.py)."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from model.checkpoint import Checkpoint, load_checkpoint, sha256_file
from model.hf.families import HFImportError
from model.hf.importer import import_hf
from model.tokenizer import IncrementalDetokenizer
from tests.model.hf.parity import hf_generate, sora_generate

transformers = pytest.importorskip("transformers")

TEXTS = ["the cat sat on the mat", "we like tea", "my brother plays music in the old house"]


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def test_each_side_has_its_own_vocabulary(marian_sep: Checkpoint, marian_sep_dir: Path) -> None:
    cfg, model = marian_sep.model.config, marian_sep.model
    vocab = read_json(marian_sep_dir / "vocab.json")
    target_vocab = read_json(marian_sep_dir / "target_vocab.json")
    assert len(vocab) != len(target_vocab)  # the fixture's point
    assert (cfg.vocab_size, cfg.target_vocab_size) == (len(vocab), len(target_vocab))
    assert model.embed.weight.shape[0] == len(vocab)
    assert model.target_embed is not None
    assert model.output_weight is model.target_embed.weight  # tied, as transformers ties it
    assert model.logits_bias is not None and model.logits_bias.shape == (len(target_vocab),)
    assert marian_sep.tokenizer.target is not None
    assert marian_sep.tokenizer.target.get_vocab() == target_vocab
    assert marian_sep.tokenizer.tokenizer.get_vocab() == vocab
    assert "target_tokenizer.json" in marian_sep.manifest["files"]


def test_tokenizer_matches_marian_tokenizer(marian_sep: Checkpoint, marian_sep_dir: Path,
                                            marian_sep_hf: torch.nn.Module) -> None:
    """Sources by source.spm over vocab.json, ending in the source side's </s>; targets
    by target.spm over target_vocab.json; outputs decode as MarianTokenizer decodes them."""
    hf_tok = transformers.MarianTokenizer.from_pretrained(marian_sep_dir)
    assert hf_tok.separate_vocabs
    tok = marian_sep.tokenizer
    for text in [*TEXTS, "unknown ÄÖÜ words  with   spaces"]:
        assert tok.source_ids("translate", text, "de") == hf_tok(text).input_ids
    for text in ("die katze sitzt", "wir mögen grünen tee"):
        assert tok.encode_target(text) == hf_tok(text_target=text).input_ids[:-1]
        assert tok.decode(tok.encode_target(text)) == text
    cfg = marian_sep.model.config
    src = [tok.source_ids("translate", t, "de") for t in TEXTS]
    outputs = hf_generate(marian_sep_hf, src, cfg.pad_id, cfg.eos_id, 12, 1)
    assert any(outputs)
    for ids in outputs:
        expected = hf_tok.decode(ids, skip_special_tokens=True)
        assert tok.decode(ids) == expected
        assert "".join(IncrementalDetokenizer(tok).stream([*ids, cfg.eos_id])) == expected


def test_streaming_skips_the_target_sides_specials(marian_sep: Checkpoint) -> None:
    tok = marian_sep.tokenizer
    assert tok.target is not None
    vocab = tok.target.get_vocab()
    assert tok.target_special_id_set == {vocab[t] for t in ("</s>", "<pad>", "<unk>")}
    ids = list(range(tok.target_vocab_size))
    assert "".join(IncrementalDetokenizer(tok).stream(ids)) == tok.decode(ids)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
def test_onednn_and_column_major_decode_the_target_side(
    marian_sep: Checkpoint, marian_sep_hf: torch.nn.Module
) -> None:
    """The CPU inference layouts (`use_onednn`, `column_major_decoder`) project onto
    the target vocabulary and generate what transformers generates."""
    fast = copy.copy(marian_sep)
    fast.model = copy.deepcopy(marian_sep.model).use_onednn().column_major_decoder()
    assert fast.model.output_weight.shape[0] == marian_sep.model.config.target_vocab_size
    cfg = marian_sep.model.config
    src = [marian_sep.tokenizer.source_ids("translate", t, "de") for t in TEXTS]
    for beams in (1, 4):
        assert sora_generate(fast, src, 12, beams) == \
            hf_generate(marian_sep_hf, src, cfg.pad_id, cfg.eos_id, 12, beams)


@pytest.mark.parametrize(("change", "problem"), [
    (lambda d: (d / "target_vocab.json").unlink(), "target_vocab.json is missing"),
    (lambda d: (d / "config.json").write_text(json.dumps(
        {**read_json(d / "config.json"), "share_encoder_decoder_embeddings": True}),
        encoding="utf-8"), "target_vocab.json exists"),
    (lambda d: (d / "config.json").write_text(json.dumps(
        {**read_json(d / "config.json"), "pad_token_id": 0}), encoding="utf-8"),
     "<pad> is 1, config.json's pad_token_id 0"),
])
def test_inconsistent_models_are_refused(marian_sep_dir: Path, tmp_path: Path,
                                         change: Callable[[Path], object], problem: str) -> None:
    src = Path(shutil.copytree(marian_sep_dir, tmp_path / "src"))
    change(src)
    with pytest.raises(HFImportError, match=problem):
        import_hf(src, tmp_path / "out")


def test_shared_vocabulary_checkpoint_without_the_field_loads_unchanged(
    marian: Checkpoint, tmp_path: Path
) -> None:
    """A checkpoint written before target_vocab_size existed (its config.json lacks it)
    loads as one vocabulary and embedding and scores exactly as before."""
    assert marian.path is not None
    old = Path(shutil.copytree(marian.path, tmp_path / "old"))
    config = read_json(old / "config.json")
    del config["target_vocab_size"]
    (old / "config.json").write_text(json.dumps(config), encoding="utf-8")
    manifest = read_json(old / "manifest.json")
    f = old / "config.json"
    manifest["files"]["config.json"] = {"sha256": sha256_file(f), "size": f.stat().st_size}
    (old / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    loaded, current = load_checkpoint(old), load_checkpoint(marian.path)
    assert loaded.model.config == current.model.config
    assert loaded.model.config.target_vocab_size == 0
    assert loaded.model.target_embed is None
    assert set(loaded.model.state_dict()) == set(current.model.state_dict())
    tok = marian.tokenizer
    src = torch.tensor([tok.source_ids("translate", TEXTS[0], "de")])
    tgt = torch.tensor([[current.model.config.bos_id, *tok.encode_target("die katze")]])
    with torch.no_grad():
        assert torch.equal(loaded.model(src, tgt).logits, current.model(src, tgt).logits)
