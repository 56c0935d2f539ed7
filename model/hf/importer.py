"""`sora import hf SRC --out DIR`: a local `save_pretrained` directory (or a hub
snapshot, `model.hf.hub`) as a Sora checkpoint (verified hashes, atomic write), with a
manifest that says what the model serves and how each task becomes its input
(`model.prompting`).

Weights come from *.safetensors only unless the caller allows pickle, and even then
`torch.load(weights_only=True)` reads them. Serving the result needs none of
transformers, sentencepiece or protobuf.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tokenizers import Tokenizer

from model.checkpoint import save_checkpoint, sha256_file, vocab_mismatch
from model.config import ConfigError
from model.hf.families import FAMILIES, Family, HFImportError, Source, family_of
from model.hf.hub import HubSnapshot
from model.hf.spm import SpmError, read_spm, spm_tokenizer
from model.prompting import Prompting
from model.sora import Sora
from model.tokenizer import SoraTokenizer, TokenizerError

# ISO 639-1 -> the 639-2/3 codes multilingual OPUS-MT uses in its >>xxx<< target tokens.
ISO3 = {
    "en": "eng", "de": "deu", "fr": "fra", "es": "spa", "it": "ita", "zh": "zho",
    "pt": "por", "nl": "nld", "ru": "rus", "ja": "jpn", "ar": "ara", "ro": "ron",
    "cs": "ces", "fi": "fin", "pl": "pol", "tr": "tur", "sv": "swe", "da": "dan",
    "ko": "kor", "hi": "hin", "uk": "ukr", "el": "ell", "hu": "hun", "bg": "bul",
}
ISO1 = {v: k for k, v in ISO3.items()}
T5_TEMPLATES = {
    "translate": "translate {source} to {target}: {text}",
    "summarize": "summarize: {text}",
    "answer": "question: {text} context: {context}",
}
T5_PAIRS = [["en", "de"], ["en", "fr"], ["en", "ro"]]
# ISO 639-1 -> NLLB-200's FLORES-200 codes (script included).
NLLB = {
    "en": "eng_Latn", "de": "deu_Latn", "fr": "fra_Latn", "es": "spa_Latn", "it": "ita_Latn",
    "zh": "zho_Hans", "pt": "por_Latn", "nl": "nld_Latn", "ru": "rus_Cyrl", "ja": "jpn_Jpan",
    "ar": "arb_Arab", "ro": "ron_Latn", "cs": "ces_Latn", "fi": "fin_Latn", "pl": "pol_Latn",
    "tr": "tur_Latn", "sv": "swe_Latn", "da": "dan_Latn", "ko": "kor_Hang", "hi": "hin_Deva",
    "uk": "ukr_Cyrl", "el": "ell_Grek", "hu": "hun_Latn", "bg": "bul_Cyrl",
}
# ISO 639-1 -> mBART-50's codes.
MBART = {
    "en": "en_XX", "de": "de_DE", "fr": "fr_XX", "es": "es_XX", "it": "it_IT", "zh": "zh_CN",
    "pt": "pt_XX", "nl": "nl_XX", "ru": "ru_RU", "ja": "ja_XX", "ar": "ar_AR", "ro": "ro_RO",
    "cs": "cs_CZ", "fi": "fi_FI", "pl": "pl_PL", "tr": "tr_TR", "sv": "sv_SE", "ko": "ko_KR",
    "hi": "hi_IN", "uk": "uk_UA",
}
# tokenizer_config.json's tokenizer_class of mBART-cc25 and its fine-tunes (mbart-large-en-ro).
MBART_CC25_TOKENIZERS = ("MBartTokenizer", "MBartTokenizerFast")
MARIAN_NAME = re.compile(r"opus-mt-([a-z]{2,3})-([a-z]{2,3})$")
PICKLE_HELP = (
    "{path} holds only pickle weights (pytorch_model.bin), which can run code when loaded; "
    "Sora imports *.safetensors. Convert once where transformers is installed:\n"
    "  python -c \"from transformers import AutoModelForSeq2SeqLM as M; "
    "M.from_pretrained('{src}').save_pretrained('{src}', safe_serialization=True)\"\n"
    "or pass --allow-pickle to load it with torch.load(weights_only=True)."
)


@dataclass
class Overrides:
    """What the user says on the command line, over what the importer infers."""

    tasks: list[str] | None = None
    pairs: list[list[str]] | None = None  # [source, target] ISO codes
    languages: list[str] | None = None  # ISO codes of the text it reads (default: the pairs')
    templates: dict[str, str] = field(default_factory=dict)
    target_tokens: dict[str, str] = field(default_factory=dict)
    name: str | None = None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise HFImportError(f"{path}: missing file") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HFImportError(f"{path}: malformed JSON ({e})") from e
    if not isinstance(data, dict):
        raise HFImportError(f"{path}: expected a JSON object")
    return data


def load_weights(src: Path, allow_pickle: bool) -> dict[str, torch.Tensor]:
    files = sorted(src.glob("*.safetensors"))
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            weights.update(load_file(str(f)))
        except SafetensorError as e:
            raise HFImportError(f"{f}: unreadable weights ({e})") from e
    if files:
        return weights
    pickle = src / "pytorch_model.bin"
    if not pickle.is_file():
        raise HFImportError(f"{src}: no weights (*.safetensors)")
    if not allow_pickle:
        raise HFImportError(PICKLE_HELP.format(path=pickle, src=src))
    try:
        loaded = torch.load(pickle, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and containers
        raise HFImportError(f"{pickle}: refused by torch.load(weights_only=True): {e}") from e
    return dict(loaded)


def _marian_tokenizer(src: Path, cfg: dict[str, Any]) -> tuple[Tokenizer, Tokenizer | None]:
    """Marian's source.spm/target.spm over vocab.json as `tokenizers` tokenizers: the
    target one where the two .spm files differ, or where the decoder has its own
    vocabulary (share_encoder_decoder_embeddings false), which target_vocab.json numbers
    as MarianTokenizer(separate_vocabs=True) does."""
    vocab_path, source, target = src / "vocab.json", src / "source.spm", src / "target.spm"
    for f in (vocab_path, source, target):
        if not f.is_file():
            raise HFImportError(f"missing tokenizer: {f} (a Marian model needs source.spm, "
                                "target.spm and vocab.json)")
    target_vocab_path = src / "target_vocab.json"
    separate = not cfg.get("share_encoder_decoder_embeddings", True)
    if separate != target_vocab_path.is_file():
        raise HFImportError(
            f"{target_vocab_path} {'is missing' if separate else 'exists'} but config.json's "
            f"share_encoder_decoder_embeddings is {str(not separate).lower()}: the model and "
            "its tokenizer disagree on a separate target vocabulary")
    vocab = _marian_vocab(vocab_path)
    target_vocab = _marian_vocab(target_vocab_path) if separate else vocab
    if separate and vocab.get("<pad>") != cfg["pad_token_id"]:
        raise HFImportError(f"{vocab_path}: <pad> is {vocab.get('<pad>')}, config.json's "
                            f"pad_token_id {cfg['pad_token_id']} (which pads sources)")
    try:
        src_tok = _marian_side(source, vocab)
        tgt_tok = None
        if separate or source.read_bytes() != target.read_bytes():
            tgt_tok = _marian_side(target, target_vocab)
    except SpmError as e:
        raise HFImportError(str(e)) from e
    return src_tok, tgt_tok


def _marian_vocab(path: Path) -> dict[str, int]:
    vocab = {str(k): int(v) for k, v in _read_json(path).items()}
    if "<unk>" not in vocab:
        raise HFImportError(f"{path}: has no '<unk>'")
    return vocab


def _marian_side(spm: Path, vocab: dict[str, int]) -> Tokenizer:
    """One side's .spm numbered by its vocabulary, whose </s>, <pad>, <unk> and >>xx<<
    language tokens are special (matched whole, skipped on decode)."""
    special = [t for t in vocab if t in ("</s>", "<pad>", "<unk>") or
               (t.startswith(">>") and t.endswith("<<"))]
    return spm_tokenizer(read_spm(spm), vocab, "<unk>", special)


def _marian_prompting(src: Path, name: str, cfg: dict[str, Any], tok: Tokenizer,
                      pairs: list[list[str]] | None) -> tuple[Prompting, list[list[str]]]:
    codes = [t for t in tok.get_vocab() if t.startswith(">>") and t.endswith("<<")]
    info = {}
    if (src / "tokenizer_config.json").is_file():
        info = _read_json(src / "tokenizer_config.json")
    if pairs is None:
        s, t = info.get("source_lang"), info.get("target_lang")
        if not (s and t):
            m = MARIAN_NAME.search(str(cfg.get("_name_or_path", "")).rstrip("/")) or \
                MARIAN_NAME.search(name)
            if m:
                s, t = m.groups()
        if not (s and t):
            raise HFImportError("cannot tell this Marian model's languages: pass --pair SRC-TGT "
                                "(ISO codes, e.g. --pair en-de)")
        if codes:  # multilingual target: every code the vocabulary has
            targets = sorted({ISO1.get(c[2:-2], c[2:-2]) for c in codes})
            pairs = [[s, x] for x in targets if x != s]
        else:
            pairs = [[ISO1.get(s, s), ISO1.get(t, t)]]
    target_tokens = {}
    if codes:
        for _, target in pairs:
            for code in (f">>{target}<<", f">>{ISO3.get(target, target)}<<"):
                if code in codes:
                    target_tokens[target] = code
                    break
            else:
                raise HFImportError(f"the vocabulary has no target token for {target!r} "
                                    "(pass --target-token LANG=>>code<<)")
    # OPUS-MT was trained on Moses-normalized sources, by the rules of the language that
    # MarianTokenizer.normalize uses (else the source the name or --pair gives).
    moses_lang = info.get("source_lang") or next((source for source, _ in pairs), None)
    prompting = Prompting(style="text", templates={"translate": "{text}"},
                          target_tokens=target_tokens, suffix=["</s>"], moses_lang=moses_lang)
    return prompting, pairs


def _code_after_text(src: Path) -> bool:
    """Whether an mBART model reads `text </s> code` with its decoder starting from the
    target's code (mBART-cc25 and its fine-tunes, MBartTokenizer), not `code text </s>`
    with the target's code forced first (mBART-50, MBart50Tokenizer).
    tokenizer_config.json's tokenizer_class says which; without it, whether tokenizer.json's
    post-processor puts a language code after the text; without either, mBART-50."""
    info = src / "tokenizer_config.json"
    tokenizer_class = _read_json(info).get("tokenizer_class") if info.is_file() else None
    if tokenizer_class:
        return tokenizer_class in MBART_CC25_TOKENIZERS
    template = (_read_json(src / "tokenizer.json").get("post_processor") or {}).get("single")
    text_seen = False
    for piece in template or []:
        text_seen = text_seen or "Sequence" in piece
        if text_seen and piece.get("SpecialToken", {}).get("id") in MBART.values():
            return True
    return False


def _language_code_prompting(
    tok: Tokenizer, eos: str, pairs: list[list[str]] | None, code_after: bool = False
) -> tuple[Prompting, list[list[str]]]:
    """M2M100 (`__de__`), NLLB (`deu_Latn`) and mBART-50 (`de_DE`): `[source code] text
    </s>`, the target code forced as the first output token; mBART-cc25 (`code_after`):
    `text </s> [source code]`, the decoder starting from the target code (what
    MBartTokenizer builds and its decoder_start_token_id does). Languages: the ISO codes
    whose code the vocabulary has; any pair of them unless the user gives pairs."""
    vocab = tok.get_vocab()
    codes = {iso: code for iso, code in NLLB.items() if code in vocab} or \
        {iso: code for iso, code in MBART.items() if code in vocab}
    if not codes:
        codes = {t[2:-2]: t for t in vocab if re.fullmatch(r"__[a-z]{2,3}__", t)}
    if not codes:
        raise HFImportError("the tokenizer has no language codes (__de__, deu_Latn or de_DE)")
    if pairs is None:
        pairs = [[s, t] for s in sorted(codes) for t in sorted(codes) if s != t]
    layout: dict[str, Any] = {"prefix": ["{source}"], "suffix": [eos]}
    if code_after:
        layout = {"suffix": [eos, "{source}"], "forced_start": True}
    return Prompting(style="text", templates={"translate": "{text}"}, source_tokens=codes,
                     forced_tokens=codes, **layout), pairs


def _token(tok: Tokenizer, cfg: dict[str, Any], key: str, where: str = "config.json") -> str:
    token = tok.id_to_token(cfg[key]) if isinstance(cfg.get(key), int) else None
    if token is None:
        raise HFImportError(f"{where} {key} {cfg.get(key)!r} is not a token of the tokenizer")
    return str(token)


def _infer(family: Family, src: Path, name: str, cfg: dict[str, Any], tok: Tokenizer,
           pairs: list[list[str]] | None) -> tuple[Prompting, list[list[str]]]:
    """The family's own prompting and language pairs (pairs: the user's, if given; name:
    the directory's or hub id's, which names a Marian model's pair)."""
    if family.architecture == "marian":
        return _marian_prompting(src, name, cfg, tok, pairs)
    eos = _token(tok, cfg, "eos_token_id")
    if family.architecture in ("m2m100", "mbart"):
        code_after = family.architecture == "mbart" and _code_after_text(src)
        return _language_code_prompting(tok, eos, pairs, code_after)
    if family.architecture == "t5":
        return (Prompting(style="text", templates=dict(T5_TEMPLATES), suffix=[eos]),
                pairs if pairs is not None else T5_PAIRS)
    # BART: a summarizer (or whatever the user's templates say), <s> text </s>.
    bos = _token(tok, cfg, "bos_token_id")
    return Prompting(style="text", templates={"summarize": "{text}"}, prefix=[bos],
                     suffix=[eos]), pairs or []


def import_hf(src: str | Path, out: str | Path, *, allow_pickle: bool = False,
              overrides: Overrides | None = None, dtype: str = "float32",
              hub: HubSnapshot | None = None) -> Path:
    """Import the save_pretrained directory `src` into the Sora checkpoint `out`; `hub`:
    the snapshot `src` is, whose id and commit the provenance records."""
    src, over = Path(src), overrides or Overrides()
    if not src.is_dir():
        raise HFImportError(f"{src}: not a directory (give a save_pretrained directory)")
    cfg = _read_json(src / "config.json")
    # A hub snapshot's directory is named after its commit: the id names the model.
    name = hub.repo_id if hub else src.resolve().name
    source_model = hub.repo_id if hub else cfg.get("_name_or_path") or name
    family = family_of(cfg)
    src_weights = Source(load_weights(src, allow_pickle))
    try:
        config = family.config(cfg, src_weights)
        config = replace(config, forced_eos=_forced_eos(src, cfg, config.eos_id))
    except (KeyError, ConfigError) as e:
        raise HFImportError(f"{src / 'config.json'}: cannot map to a Sora model: {e}") from e
    if family.architecture == "marian":
        tok, target = _marian_tokenizer(src, cfg)
    else:
        if not (src / "tokenizer.json").is_file():
            raise HFImportError(
                f"missing tokenizer: {src / 'tokenizer.json'} (save the model's fast tokenizer "
                "there: AutoTokenizer.from_pretrained(SRC).save_pretrained(SRC))")
        tok, target = Tokenizer.from_file(str(src / "tokenizer.json")), None
    prompting, pairs = _infer(family, src, name, cfg, tok, over.pairs)
    prompting = replace(prompting, templates={**prompting.templates, **over.templates},
                        target_tokens={**prompting.target_tokens, **over.target_tokens},
                        language_pairs=pairs)
    prompting = replace(prompting, forced_first=_forced_first(src, cfg, prompting, target or tok))
    tasks = over.tasks or sorted(prompting.templates)
    missing = sorted(set(tasks) - set(prompting.templates))
    if missing:
        raise HFImportError(f"no template for task(s) {', '.join(missing)}: pass --template "
                            "TASK=TEXT (with {text}, and {context} for answer)")
    try:
        tokenizer = SoraTokenizer(tok, prompting, target)
    except TokenizerError as e:
        raise HFImportError(f"tokenizer: {e}") from e
    mismatch = vocab_mismatch(tokenizer, config)
    if mismatch:
        raise HFImportError(mismatch)
    model = Sora(config)
    state = family.weights(src_weights, config, cfg)
    _check_shapes(model, state)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    _ban_tokens(model, cfg)
    # A summarizer's languages: the user's, else English (BART, T5 were trained on it).
    languages = over.languages or sorted({lang for pair in pairs for lang in pair}) or ["en"]
    architecture = family.architecture
    if architecture == "m2m100" and set(prompting.forced_tokens.values()) <= set(NLLB.values()):
        architecture = "nllb"
    # Pairs absent from the manifest: any two of its languages (M2M100, NLLB).
    any_pair = architecture in ("m2m100", "nllb", "mbart") and over.pairs is None
    info = {
        "name": over.name or str(source_model),
        "architecture": architecture,
        "tasks": tasks,
        "languages": languages,
        **({"language_pairs": pairs} if "translate" in tasks and not any_pair else {}),
        "prompting": prompting.to_dict(),
        "provenance": {
            "imported_from": str(src.resolve()),
            "source_model": source_model,
            **({"revision": hub.revision} if hub else {}),
            "model_type": cfg.get("model_type"),
            "transformers_version": cfg.get("transformers_version"),
            "sha256": {f.name: sha256_file(f) for f in sorted(src.iterdir())
                       if f.is_file() and f.suffix in (".json", ".spm", ".model")},
        },
    }
    return save_checkpoint(out, model, tokenizer, dtype=dtype, info=info)


def _generation_settings(src: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """generation_config.json (which transformers reads over config.json), or config.json
    where that file is absent."""
    path = src / "generation_config.json"
    return _read_json(path) if path.is_file() else cfg


def _forced_first(src: Path, cfg: dict[str, Any], prompting: Prompting,
                  target: Tokenizer) -> str | None:
    """The token generate() forces first on every output (forced_bos_token_id: BART-large-
    cnn's <s>). Models that force a language code per request (NLLB, mBART) keep theirs."""
    settings = _generation_settings(src, cfg)
    if settings.get("forced_bos_token_id") is None or prompting.forced_tokens:
        return None
    return _token(target, settings, "forced_bos_token_id", "the generation settings'")


def _forced_eos(src: Path, cfg: dict[str, Any], eos_id: int) -> bool:
    """Whether generate() ends every length-limited output with eos (forced_eos_token_id).
    Only the model's own eos is supported."""
    forced = _generation_settings(src, cfg).get("forced_eos_token_id")
    if forced is None:
        return False
    if forced not in (eos_id, [eos_id]):
        raise HFImportError(f"forced_eos_token_id {forced!r} is not the eos token ({eos_id}): "
                            "not supported")
    return True


def _check_shapes(model: Sora, state: dict[str, torch.Tensor]) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise HFImportError(f"weights do not match the config: missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]}")
    for name, t in state.items():
        if t.shape != expected[name].shape:
            raise HFImportError(f"shape mismatch: {name} is {tuple(t.shape)}, the config "
                                f"implies {tuple(expected[name].shape)}")


def _ban_tokens(model: Sora, cfg: dict[str, Any]) -> None:
    """Single-token `bad_words_ids` (Marian bans <pad>) as -inf in the logits bias, which
    is what generate()'s processor does to them at every step."""
    banned = [ids[0] for ids in cfg.get("bad_words_ids") or [] if len(ids) == 1]
    if banned and model.logits_bias is not None:
        with torch.no_grad():
            model.logits_bias[banned] = float("-inf")


SUPPORTED = sorted(FAMILIES)
