"""SentencePiece model files (Marian's source.spm / target.spm) as `tokenizers`
tokenizers: what Sora's tokenizer loads, so serving needs neither sentencepiece nor
protobuf. The .spm protobuf is read by the few lines below rather than by generated
code, whose protobuf runtime would have to match the one serving pins.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
from tokenizers.models import Unigram

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


class SpmError(ValueError):
    """A file that is not a SentencePiece model this converter handles."""


@dataclass
class SpmModel:
    pieces: list[tuple[str, float, int]] = field(default_factory=list)  # (piece, score, type)
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True
    model_type: int = 1  # 1 = unigram, 2 = bpe
    byte_fallback: bool = False


def _fields(data: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of each field of one protobuf message."""
    i = 0

    def varint() -> int:
        nonlocal i
        shift = result = 0
        while True:
            if i >= len(data):
                raise SpmError("truncated protobuf")
            b = data[i]
            i += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, varint()
        elif wire == 1:
            yield number, wire, data[i : i + 8]
            i += 8
        elif wire == 2:
            n = varint()
            yield number, wire, data[i : i + n]
            i += n
        elif wire == 5:
            yield number, wire, data[i : i + 4]
            i += 4
        else:
            raise SpmError(f"unsupported protobuf wire type {wire}")


def read_spm(path: Path) -> SpmModel:
    """ModelProto: 1 pieces {1 piece, 2 score, 3 type}, 2 trainer_spec {3 model_type,
    35 byte_fallback}, 3 normalizer_spec {2 precompiled_charsmap, 3 add_dummy_prefix,
    4 remove_extra_whitespaces, 5 escape_whitespaces}."""
    model = SpmModel()
    try:
        for number, _, value in _fields(path.read_bytes()):
            if number == 1:
                piece, score, kind = "", 0.0, NORMAL
                for n, _, v in _fields(value):
                    if n == 1:
                        piece = v.decode("utf-8")
                    elif n == 2:
                        score = struct.unpack("<f", v)[0]
                    elif n == 3:
                        kind = v
                model.pieces.append((piece, score, kind))
            elif number == 2:
                for n, _, v in _fields(value):
                    if n == 3:
                        model.model_type = v
                    elif n == 35:
                        model.byte_fallback = bool(v)
            elif number == 3:
                for n, _, v in _fields(value):
                    if n == 2:
                        model.precompiled_charsmap = v
                    elif n == 3:
                        model.add_dummy_prefix = bool(v)
                    elif n == 4:
                        model.remove_extra_whitespaces = bool(v)
                    elif n == 5:
                        model.escape_whitespaces = bool(v)
    except (SpmError, UnicodeDecodeError, struct.error, TypeError) as e:
        raise SpmError(f"{path}: not a SentencePiece model ({e})") from e
    if not model.pieces:
        raise SpmError(f"{path}: not a SentencePiece model (no pieces)")
    if model.model_type != 1:
        raise SpmError(f"{path}: only unigram SentencePiece models are supported (Marian's kind)")
    return model


def spm_tokenizer(spm: SpmModel, vocab: dict[str, int], unk: str, special: list[str]) -> Tokenizer:
    """A Unigram tokenizer that segments text as `spm` does and numbers the pieces by
    `vocab` (Marian's vocab.json, which is not in the .spm's order). A vocab entry the
    .spm lacks (the other side's pieces, language codes) gets a score no segmentation
    prefers; `special` entries are added tokens, matched whole and skipped on decode."""
    scores = {piece: score for piece, score, kind in spm.pieces if kind in (NORMAL, USER_DEFINED)}
    floor = min(scores.values(), default=0.0) - 1e6
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in ordered] != list(range(len(ordered))):
        raise SpmError("vocab.json ids must be 0..n-1 without gaps")
    tok = Tokenizer(Unigram([(p, scores.get(p, floor)) for p, _ in ordered], vocab[unk], False))
    steps: list[normalizers.Normalizer] = []
    if spm.precompiled_charsmap:
        steps.append(normalizers.Precompiled(spm.precompiled_charsmap))
    if spm.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""),
                  normalizers.Replace(Regex(" {2,}"), " ")]
    if spm.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    if spm.add_dummy_prefix:
        # Metaspace skips the dummy prefix when text already starts with "▁"; spm does not.
        steps.append(normalizers.Replace(Regex(r"\A▁"), "▁▁"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                     split=False)
    tok.normalizer = normalizers.Sequence(steps)
    parts: list[decoders.Decoder] = [decoders.Replace("▁", " ")]
    if spm.add_dummy_prefix:
        parts += [decoders.Fuse(), decoders.Strip(content=" ", left=1)]
    tok.decoder = decoders.Sequence(parts)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    return tok
