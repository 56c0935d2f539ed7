"""Tiny random-weight Hugging Face models saved with save_pretrained, one per family,
and their imports: built once per session, no download. transformers and
sentencepiece are test-only dependencies (the dev extra).

For each NAME of `MODELS`: fixtures NAME_dir (the save_pretrained directory), NAME
(its import, a loaded Checkpoint) and NAME_hf (the transformers model)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from model.checkpoint import Checkpoint, load_checkpoint
from model.hf.importer import import_hf

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


def save_random(path: Path, model_class: type, config: object, seed: int, std: float,
                eos_bias: float = 0.0, eos_scale: float = 1.0) -> Path:
    """A randomized model saved with save_pretrained; </s> made likelier (a logits bias,
    or a larger embedding row) so that outputs end at different lengths."""
    torch.manual_seed(0)
    model = model_class(config)
    randomize(model, seed, std)
    eos = config.eos_token_id  # type: ignore[attr-defined]
    with torch.no_grad():
        if eos_bias:
            model.final_logits_bias[0, eos] = eos_bias
        model.get_input_embeddings().weight[eos] *= eos_scale
    model.save_pretrained(path)
    return path


# Marian's tiny shape: ids (pad, eos, decoder start) are each fixture's own.
MARIAN_SHAPE = {
    "d_model": 16, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 2,
    "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32,
    "max_position_embeddings": 64, "activation_function": "swish", "forced_eos_token_id": None,
    "dropout": 0.0,
}


def spm_pieces(path: Path) -> list[str]:
    """A trained .spm's pieces but its <unk> (which Marian's vocabularies name)."""
    sp = spm.SentencePieceProcessor(model_file=str(path))
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not sp.is_unknown(i)]


def write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data), encoding="utf-8")


def save_marian(path: Path, multilingual: bool) -> Path:
    path.mkdir()
    train_spm(ENGLISH, path / "source.spm", 60)
    train_spm(GERMAN, path / "target.spm", 60)
    pieces: list[str] = ["</s>", "<unk>"]
    for name in ("source.spm", "target.spm"):
        pieces += [p for p in spm_pieces(path / name) if p not in pieces]
    if multilingual:
        pieces += [">>deu<<", ">>fra<<"]
    vocab = {p: i for i, p in enumerate([*pieces, "<pad>"])}
    write_json(path / "vocab.json", vocab)
    write_json(path / "tokenizer_config.json", {"source_lang": "en", "target_lang": "de"})
    pad = vocab["<pad>"]
    config = transformers.MarianConfig(
        vocab_size=len(vocab), **MARIAN_SHAPE, pad_token_id=pad, eos_token_id=0,
        decoder_start_token_id=pad, bad_words_ids=[[pad]],
    )
    return save_random(path, transformers.MarianMTModel, config,
                       seed=1, std=STD, eos_bias=EOS_BIAS)


def save_marian_separate(path: Path) -> Path:
    """OPUS-MT with separate vocabularies (share_encoder_decoder_embeddings false): each
    side's own .spm and vocabulary (vocab.json, target_vocab.json), of different sizes and
    numberings (</s> differs; <pad> is config.json's pad_token_id in both, as the one
    padding id of both embeddings), the lm_head tied to the decoder's embedding."""
    path.mkdir()
    train_spm(ENGLISH, path / "source.spm", 60)
    train_spm(GERMAN, path / "target.spm", 45)
    source = ["<unk>", "<pad>", "</s>", *spm_pieces(path / "source.spm")]
    target = ["</s>", "<pad>", "<unk>", *spm_pieces(path / "target.spm")]
    vocab, target_vocab = ({p: i for i, p in enumerate(v)} for v in (source, target))
    write_json(path / "vocab.json", vocab)
    write_json(path / "target_vocab.json", target_vocab)
    write_json(path / "tokenizer_config.json",
               {"source_lang": "en", "target_lang": "de", "separate_vocabs": True})
    config = transformers.MarianConfig(
        vocab_size=len(vocab), decoder_vocab_size=len(target_vocab),
        share_encoder_decoder_embeddings=False, **MARIAN_SHAPE, pad_token_id=1,
        eos_token_id=0, decoder_start_token_id=1, bad_words_ids=[[1]],
    )
    return save_random(path, transformers.MarianMTModel, config,
                       seed=10, std=SEPARATE_STD, eos_bias=SEPARATE_EOS_BIAS)


SEPARATE_STD, SEPARATE_EOS_BIAS = 0.6, 4.3  # a mix of ended and cut-off outputs


def unigram_vocab(specials: list[str]) -> list[tuple[str, float]]:
    """Specials first, then whole words of the test sentences and every character, with
    fixed scores (deterministic, unlike training)."""
    words = sorted({w for line in [*ENGLISH, *GERMAN, *T5_WORDS] for w in line.split()})
    chars = sorted({c for w in words for c in w})
    vocab = [(t, 0.0) for t in specials]
    vocab += [(f"▁{w}", -float(len(w))) for w in words]
    return vocab + [(c, -10.0) for c in chars] + [("▁", -10.0)]


def sentencepiece_like_tokenizer(specials: list[str]) -> Tokenizer:
    """A Unigram tokenizer.json as T5's fast tokenizer has one (Metaspace, specials
    first) over `unigram_vocab`."""
    vocab = unigram_vocab(specials)
    tok = Tokenizer(models.Unigram(vocab, unk_id=specials.index("<unk>")))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.add_special_tokens([AddedToken(t, special=True) for t in specials])
    return tok


T5_WORDS = ["summarize: question: context: translate English to German:"]


def save_t5(path: Path, gated: bool) -> Path:
    path.mkdir()
    tok = sentencepiece_like_tokenizer(["<pad>", "</s>", "<unk>"])
    tok.save(str(path / "tokenizer.json"))
    config = transformers.T5Config(
        vocab_size=tok.get_vocab_size(), d_model=16, d_kv=6, d_ff=32, num_layers=2,
        num_decoder_layers=2, num_heads=2, relative_attention_num_buckets=8,
        relative_attention_max_distance=20, dropout_rate=0.0,
        feed_forward_proj="gated-gelu" if gated else "relu",
        tie_word_embeddings=not gated, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0,
    )
    return save_random(path, transformers.T5ForConditionalGeneration, config,
                       seed=2, std=T5_STD, eos_scale=T5_EOS_SCALE)


T5_STD, T5_EOS_SCALE = 0.4, 2.0  # a mix of ended and cut-off outputs


# BART's and M2M100's tiny shape, with fairseq's special ids (<s> 0, <pad> 1, </s> 2),
# decoding from </s>.
FAIRSEQ_SHAPE = {
    "d_model": 16, "encoder_layers": 2, "decoder_layers": 2, "encoder_attention_heads": 2,
    "decoder_attention_heads": 2, "encoder_ffn_dim": 32, "decoder_ffn_dim": 32,
    "max_position_embeddings": 64, "dropout": 0.0, "bos_token_id": 0, "pad_token_id": 1,
    "eos_token_id": 2, "decoder_start_token_id": 2,
}


def save_bart(path: Path, forced: bool = False) -> Path:
    """BART; `forced`: with BART-large-cnn's forced_bos_token_id (<s>) and
    forced_eos_token_id (eos)."""
    path.mkdir()
    tok = sentencepiece_like_tokenizer(["<s>", "<pad>", "</s>", "<unk>"])
    tok.save(str(path / "tokenizer.json"))
    config = transformers.BartConfig(vocab_size=tok.get_vocab_size(), **FAIRSEQ_SHAPE,
                                     forced_bos_token_id=None,
                                     forced_eos_token_id=2 if forced else None)
    save_random(path, transformers.BartForConditionalGeneration, config,
                seed=3, std=BART_STD, eos_bias=BART_EOS_BIAS)
    if forced:  # save_pretrained leaves forced_bos_token_id out; the hub's files have it
        generation = json.loads((path / "generation_config.json").read_text())
        write_json(path / "generation_config.json", {**generation, "forced_bos_token_id": 0})
    return path


BART_STD, BART_EOS_BIAS = 0.3, 2.0  # a mix of ended and cut-off outputs


NLLB_CODES = ["eng_Latn", "deu_Latn", "fra_Latn"]
NLLB_STD, NLLB_EOS_SCALE = 0.4, 2.0  # a mix of ended and cut-off outputs


def save_nllb(path: Path) -> Path:
    """NLLB's shape (M2M100 architecture, FLORES-200 language codes)."""
    path.mkdir()
    tok = sentencepiece_like_tokenizer(["<s>", "<pad>", "</s>", "<unk>", *NLLB_CODES])
    tok.save(str(path / "tokenizer.json"))
    config = transformers.M2M100Config(vocab_size=tok.get_vocab_size(), **FAIRSEQ_SHAPE,
                                       scale_embedding=True)
    return save_random(path, transformers.M2M100ForConditionalGeneration, config,
                       seed=4, std=NLLB_STD, eos_scale=NLLB_EOS_SCALE)


MBART_STD, MBART_EOS_BIAS = 0.3, 2.5  # a mix of ended and cut-off outputs


def save_mbart(path: Path) -> Path:
    """mBART-50's shape (many-to-many: source code first, target code forced)."""
    path.mkdir()
    tok = sentencepiece_like_tokenizer(["<s>", "<pad>", "</s>", "<unk>", "en_XX", "de_DE",
                                        "fr_XX"])
    tok.save(str(path / "tokenizer.json"))
    config = transformers.MBartConfig(vocab_size=tok.get_vocab_size(), **FAIRSEQ_SHAPE,
                                      scale_embedding=True, forced_eos_token_id=None)
    return save_random(path, transformers.MBartForConditionalGeneration, config,
                       seed=5, std=MBART_STD, eos_bias=MBART_EOS_BIAS)


def save_mbart_cc25(path: Path) -> Path:
    """mBART-cc25's layout (`text </s> src_code`, the decoder starting from the target's
    code), its tokenizer saved by transformers' own MBartTokenizer (tokenizer.json and a
    tokenizer_config.json naming the class); decoder_start_token_id unset, as cc25's."""
    tok = transformers.MBartTokenizer(vocab=unigram_vocab(["<s>", "<pad>", "</s>", "<unk>"]),
                                      src_lang="en_XX", tgt_lang="de_DE")
    tok.save_pretrained(path)
    shape = {**FAIRSEQ_SHAPE, "decoder_start_token_id": None}
    config = transformers.MBartConfig(vocab_size=len(tok), **shape, scale_embedding=True,
                                      forced_eos_token_id=None)
    return save_random(path, transformers.MBartForConditionalGeneration, config,
                       seed=6, std=MBART_STD, eos_bias=MBART_EOS_BIAS)


# name -> (directory name, save function, transformers model class)
MODELS: dict[str, tuple[str, Callable[[Path], Path], str]] = {
    "marian": ("opus-mt-en-de", lambda p: save_marian(p, multilingual=False), "MarianMTModel"),
    "marian_multi": ("opus-mt-en-mul", lambda p: save_marian(p, multilingual=True),
                     "MarianMTModel"),
    "marian_sep": ("opus-mt-en-de-separate", save_marian_separate, "MarianMTModel"),
    "t5": ("t5-tiny", lambda p: save_t5(p, gated=False), "T5ForConditionalGeneration"),
    "flan": ("flan-t5-tiny", lambda p: save_t5(p, gated=True), "T5ForConditionalGeneration"),
    "bart": ("bart-tiny", save_bart, "BartForConditionalGeneration"),
    "bart_cnn": ("bart-cnn-tiny", lambda p: save_bart(p, forced=True),
                 "BartForConditionalGeneration"),
    "nllb": ("nllb-tiny", save_nllb, "M2M100ForConditionalGeneration"),
    "mbart": ("mbart-tiny", save_mbart, "MBartForConditionalGeneration"),
    "mbart_cc25": ("mbart-cc25-tiny", save_mbart_cc25, "MBartForConditionalGeneration"),
}


def _register(name: str, dirname: str, save: Callable[[Path], Path], model_class: str) -> None:
    def directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
        return save(tmp_path_factory.mktemp("hf") / dirname)

    def imported(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
        src = request.getfixturevalue(f"{name}_dir")
        return load_checkpoint(import_hf(src, tmp_path_factory.mktemp("imported") / name))

    def reference(request: pytest.FixtureRequest) -> torch.nn.Module:
        src = request.getfixturevalue(f"{name}_dir")
        return getattr(transformers, model_class).from_pretrained(src).eval()

    for fixture, func in ((f"{name}_dir", directory), (name, imported), (f"{name}_hf", reference)):
        globals()[fixture] = pytest.fixture(scope="session", name=fixture)(func)


for _name, _spec in MODELS.items():
    _register(_name, *_spec)
