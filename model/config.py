"""The model's shape and special ids, saved next to the weights as config.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

ACTIVATIONS = ("gelu", "relu", "gelu_new", "silu", "gated-gelu", "gated-silu")
NORMS = ("layernorm", "rmsnorm")
NORM_PLACEMENTS = ("pre", "post")
# "sinusoidal": Sora's interleaved sin/cos; "sinusoidal-halves": sin then cos halves with
# frequencies 10000^(-2i/d) (Marian); "sinusoidal-fairseq": halves with 10000^(-i/(d/2-1))
# (M2M100/NLLB); "learned": a table per side (BART); "relative": T5's bucketed bias.
POSITIONS = ("sinusoidal", "sinusoidal-halves", "sinusoidal-fairseq", "learned", "relative")


class ConfigError(ValueError):
    """A config that cannot describe a working model."""


@dataclass(frozen=True)
class SoraConfig:
    """The model's shape. `bos_id` is the decoder's start token (pad's id for Marian and
    T5, </s> for BART): every decode starts from it."""

    vocab_size: int = 8000
    d_model: int = 256  # embedding dim, shared by encoder, decoder and output projection
    n_heads: int = 4
    n_encoder_layers: int = 3
    n_decoder_layers: int = 3
    d_ff: int = 1024
    dropout: float = 0.1
    max_source_positions: int = 256
    max_target_positions: int = 256
    activation: str = "gelu"
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    # A length-limited output's last token is eos (transformers' forced_eos_token_id,
    # BART-large-cnn): generation forces it where a row reaches max_new_tokens.
    forced_eos: bool = False
    tie_embeddings: bool = True
    # -- architecture (format version 2); the defaults are Sora's own model ------------
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_placement: str = "pre"  # norm before each block (residual untouched) or after
    embedding_norm: bool = False  # a norm after embeddings + positions (BART)
    final_norms: bool = True  # a norm after the last encoder and decoder layers
    positions: str = "sinusoidal"
    position_offset: int = 0  # position p reads row p + offset (BART's 2, M2M100's 2)
    relative_buckets: int = 32  # positions == "relative" only
    relative_max_distance: int = 128
    scale_embeddings: bool = True  # multiply embeddings by sqrt(d_model)
    linear_bias: bool = True  # biases in attention and feed-forward projections
    final_logits_bias: bool = False  # a (vocab,) bias added to the logits (Marian, BART)
    d_attention: int = 0  # heads * head_dim where it differs from d_model (T5 v1.1); 0 = d_model
    # The decoder's own vocabulary, embedding and output projection (Marian with separate
    # source/target vocabularies); 0 = one vocabulary, one embedding for both sides.
    target_vocab_size: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_heads", "d_ff", "max_source_positions",
                     "max_target_positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("n_encoder_layers", "n_decoder_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("d_attention", "target_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be an integer >= 0, got {value!r}")
        if self.attention_dim % self.n_heads:
            name = "d_attention" if self.d_attention else "d_model"
            raise ConfigError(
                f"{name} ({self.attention_dim}) must be divisible by n_heads ({self.n_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        for name, allowed in (("norm", NORMS), ("norm_placement", NORM_PLACEMENTS),
                              ("positions", POSITIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        if not (isinstance(self.position_offset, int) and self.position_offset >= 0):
            raise ConfigError(
                f"position_offset must be an integer >= 0, got {self.position_offset!r}"
            )
        if self.positions.startswith("sinusoidal-") and self.d_model % 2:
            raise ConfigError(f"positions {self.positions!r} need an even d_model")
        if not 0.0 < self.norm_eps < 1.0:
            raise ConfigError(f"norm_eps must be in (0, 1), got {self.norm_eps!r}")
        for name in ("relative_buckets", "relative_max_distance"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 2:
                raise ConfigError(f"{name} must be an integer >= 2, got {value!r}")
        # bos and eos are target ids; pad pads both sides.
        target = "target_vocab_size" if self.target_vocab_size else "vocab_size"
        for name, limits in (("pad_id", ("vocab_size", target)), ("bos_id", (target,)),
                             ("eos_id", (target,))):
            value = getattr(self, name)
            for limit in limits:
                if not isinstance(value, int) or not 0 <= value < getattr(self, limit):
                    raise ConfigError(f"{name} must be a token id below {limit}, got {value!r}")

    @property
    def attention_dim(self) -> int:
        """Width of queries, keys and values (all heads together)."""
        return self.d_attention or self.d_model

    @property
    def decoder_vocab_size(self) -> int:
        """The target side's vocabulary: the decoder's embedding rows, the logits' width."""
        return self.target_vocab_size or self.vocab_size

    @property
    def head_dim(self) -> int:
        return self.attention_dim // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SoraConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**data)

    def to_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def from_file(cls, path: str | Path) -> SoraConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
