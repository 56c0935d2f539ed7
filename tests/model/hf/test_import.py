"""`sora import hf`: the command, what the manifest says, and the refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from cli.main import main
from model.checkpoint import Checkpoint, load_checkpoint
from model.hf.families import HFImportError
from model.hf.importer import Overrides, import_hf
from model.tokenizer import TokenizerError
from tests.model.hf.parity import assert_logits_match, hf_generate

transformers = pytest.importorskip("transformers")


def test_cli_import_then_generate(
    marian_dir: Path, marian_hf: torch.nn.Module, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "opus"
    assert main(["import", "hf", str(marian_dir), "--out", str(out), "--name", "opus-tiny"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    ckpt = load_checkpoint(out)
    assert ckpt.name == "opus-tiny"
    text = "the cat sat on the mat"
    assert main(["generate", "--checkpoint", str(out), "--target-lang", "de",
                 "--max-new-tokens", "12", text]) == 0
    cfg = ckpt.model.config
    src = [ckpt.tokenizer.source_ids("translate", text, "de")]
    expected = hf_generate(marian_hf, src, cfg.pad_id, cfg.eos_id, 12, 1)[0]
    assert capsys.readouterr().out == ckpt.tokenizer.decode(expected) + "\n"


def test_multilingual_marian_target_tokens(marian_multi: Checkpoint) -> None:
    tok = marian_multi.tokenizer
    assert marian_multi.manifest["language_pairs"] == [["en", "de"], ["en", "fr"]]
    assert marian_multi.manifest["prompting"]["target_tokens"] == {"de": ">>deu<<",
                                                                    "fr": ">>fra<<"}
    ids = tok.source_ids("translate", "we like tea", "fr")
    assert ids[0] == tok.token_id(">>fra<<") and ids[-1] == tok.token_id("</s>")
    assert ids[1:-1] == tok.encode("we like tea")
    with pytest.raises(TokenizerError, match="unsupported target language 'es'; expected one "
                                             "of de, fr"):
        tok.source_ids("translate", "we like tea", "es")


def test_multilingual_marian_infers_pairs_from_codes(
    marian_multi_dir: Path, tmp_path: Path
) -> None:
    ckpt = load_checkpoint(import_hf(marian_multi_dir, tmp_path / "m"))
    assert ckpt.manifest["language_pairs"] == [["en", "de"], ["en", "fr"]]


def test_task_override_needs_a_template(marian_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(HFImportError, match="no template for task"):
        import_hf(marian_dir, tmp_path / "x", overrides=Overrides(tasks=["summarize"]))
    ckpt = load_checkpoint(import_hf(
        marian_dir, tmp_path / "y",
        overrides=Overrides(tasks=["translate", "summarize"],
                            templates={"summarize": "{text}"}, pairs=[["en", "de"]])))
    assert ckpt.manifest["tasks"] == ["translate", "summarize"]
    assert ckpt.tokenizer.source_ids("summarize", "we like tea") == \
        ckpt.tokenizer.source_ids("translate", "we like tea", "de")


def copy_without(src: Path, dst: Path, *names: str) -> Path:
    shutil.copytree(src, dst)
    for name in names:
        (dst / name).unlink()
    return dst


def test_pickle_only_is_refused_unless_allowed(
    marian_dir: Path, marian: Checkpoint, marian_hf: torch.nn.Module, tmp_path: Path
) -> None:
    src = copy_without(marian_dir, tmp_path / "pickled", "model.safetensors")
    torch.save(marian_hf.state_dict(), src / "pytorch_model.bin")
    with pytest.raises(HFImportError) as info:
        import_hf(src, tmp_path / "out")
    message = str(info.value)
    assert "pytorch_model.bin" in message and "safe_serialization=True" in message
    assert "--allow-pickle" in message
    assert not (tmp_path / "out").exists()
    ckpt = load_checkpoint(import_hf(src, tmp_path / "out", allow_pickle=True))
    tok = ckpt.tokenizer
    assert_logits_match(ckpt, marian_hf, [tok.source_ids("translate", "we like tea", "de")],
                        [tok.encode_target("wir mögen")])


def test_unsupported_architecture(marian_dir: Path, tmp_path: Path) -> None:
    src = Path(shutil.copytree(marian_dir, tmp_path / "gpt"))
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFImportError) as info:
        import_hf(src, tmp_path / "out")
    assert str(info.value) == ("unsupported architecture 'gpt2'; supported: bart, m2m_100, "
                               "marian, mbart, mt5, t5")


def test_missing_tokenizer(marian_dir: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    src = copy_without(marian_dir, tmp_path / "no-spm", "source.spm")
    assert main(["import", "hf", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: missing tokenizer: {src / 'source.spm'}")


def test_shape_mismatch(marian_dir: Path, tmp_path: Path) -> None:
    src = Path(shutil.copytree(marian_dir, tmp_path / "wrong"))
    cfg = json.loads((src / "config.json").read_text())
    cfg["encoder_ffn_dim"] = cfg["decoder_ffn_dim"] = 48
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFImportError, match=r"shape mismatch: encoder_layers.0.ffn.up.weight is "
                                            r"\(32, 16\), the config implies \(48, 16\)"):
        import_hf(src, tmp_path / "out")


def test_languages_needed_for_an_unnamed_marian(marian_dir: Path, tmp_path: Path) -> None:
    src = copy_without(marian_dir, tmp_path / "model", "tokenizer_config.json")
    with pytest.raises(HFImportError, match="pass --pair SRC-TGT"):
        import_hf(src, tmp_path / "out")
    ckpt = load_checkpoint(import_hf(src, tmp_path / "out", overrides=Overrides(
        pairs=[["en", "de"]])))
    assert ckpt.manifest["language_pairs"] == [["en", "de"]]
    # No tokenizer_config.json source_lang: the pair's source picks Moses' rules.
    assert ckpt.manifest["prompting"]["moses_lang"] == "en"
