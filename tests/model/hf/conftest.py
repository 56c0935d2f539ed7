"""Tiny random-weight Hugging Face models saved with save_pretrained, one per family,
and their imports: built once per session, no download. transformers and
sentencepiece are test-only dependencies (the dev extra)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from model.checkpoint import Checkpoint, load_checkpoint
from model.hf.importer import Overrides, import_hf

transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

ENGLISH = [
    "the cat sat on the mat", "a dog runs in the park", "we like green tea",
    "the weather is nice today", "she reads a long book", "they walk to school",
    "my brother plays music", "this house is very old", "he drinks cold water",
    "the children sing a song",
] * 4
GERMAN = [
    "die katze sitzt auf der matte", "ein hund rennt im park", "wir mögen grünen tee",
    "das wetter ist heute schön", "sie liest ein langes buch", "sie gehen zur schule",
    "mein bruder spielt musik", "dieses haus ist sehr alt", "er trinkt kaltes wasser",
    "die kinder singen ein lied",
] * 4


STD, EOS_BIAS = 0.5, 4.3  # a mix: some outputs end (eos), others reach the limit


def train_spm(lines: list[str], path: Path, vocab_size: int) -> None:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
        model_type="unigram", hard_vocab_limit=False, character_coverage=1.0,
        bos_id=-1, eos_id=-1, unk_id=0,
    )
    path.write_bytes(model.getvalue())


def randomize(model: torch.nn.Module, seed: int, std: float) -> None:
    """Matrices with a wide spread, so logits are far apart and greedy and beam choices
    cannot flip on rounding between two implementations; norms and biases stay as
    initialized, so outputs still depend on the input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * std)


def save_marian(path: Path, multilingual: bool) -> Path:
    path.mkdir()
    train_spm(ENGLISH, path / "source.spm", 60)
    train_spm(GERMAN, path / "target.spm", 60)
    pieces: list[str] = ["</s>", "<unk>"]
    for name in ("source.spm", "target.spm"):
        sp = spm.SentencePieceProcessor(model_file=str(path / name))
        pieces += [sp.id_to_piece(i) for i in range(sp.get_piece_size())
                   if not sp.is_unknown(i) and sp.id_to_piece(i) not in pieces]
    if multilingual:
        pieces += [">>deu<<", ">>fra<<"]
    vocab = {p: i for i, p in enumerate([*pieces, "<pad>"])}
    (path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (path / "tokenizer_config.json").write_text(
        json.dumps({"source_lang": "en", "target_lang": "de"}), encoding="utf-8")
    pad = vocab["<pad>"]
    config = transformers.MarianConfig(
        vocab_size=len(vocab), d_model=16, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_position_embeddings=64, activation_function="swish",
        pad_token_id=pad, eos_token_id=0, decoder_start_token_id=pad,
        forced_eos_token_id=None, bad_words_ids=[[pad]], dropout=0.0,
    )
    torch.manual_seed(0)
    model = transformers.MarianMTModel(config)
    randomize(model, seed=1, std=STD)
    with torch.no_grad():  # outputs end at different lengths
        model.final_logits_bias[0, config.eos_token_id] = EOS_BIAS
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def marian_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_marian(tmp_path_factory.mktemp("hf") / "opus-mt-en-de", multilingual=False)


@pytest.fixture(scope="session")
def marian_multi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_marian(tmp_path_factory.mktemp("hf") / "opus-mt-en-mul", multilingual=True)


@pytest.fixture(scope="session")
def marian(marian_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    out = tmp_path_factory.mktemp("imported") / "marian"
    import_hf(marian_dir, out)
    return load_checkpoint(out)


@pytest.fixture(scope="session")
def marian_hf(marian_dir: Path) -> torch.nn.Module:
    return transformers.MarianMTModel.from_pretrained(marian_dir).eval()


@pytest.fixture(scope="session")
def marian_multi(marian_multi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    out = tmp_path_factory.mktemp("imported") / "marian-multi"
    import_hf(marian_multi_dir, out, overrides=Overrides(pairs=[["en", "de"], ["en", "fr"]]))
    return load_checkpoint(out)
