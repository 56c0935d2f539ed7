"""Hugging Face seq2seq families as Sora models: each family maps its config.json to a
SoraConfig and its weight names to Sora's. Checked against `transformers`' modeling
code (the tests compare logits and generations with it).

Sora fuses q/k/v (self-attention) and k/v (cross-attention) into one projection each;
T5's unscaled attention becomes Sora's scaled one by multiplying the query weights by
sqrt(head_dim), and tied T5's d_model**-0.5 output scale is folded into the decoder's
final norm, so the model code needs no switch for either.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from model.config import SoraConfig

Weights = dict[str, Tensor]


class HFImportError(ValueError):
    """A source directory that cannot be imported; the message says why and what to do."""


ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_new", "gelu_pytorch_tanh":
               "gelu_new", "swish": "silu", "silu": "silu"}


def _activation(name: str) -> str:
    if name not in ACTIVATIONS:
        raise HFImportError(
            f"activation {name!r} is not supported (supported: {', '.join(sorted(ACTIVATIONS))})"
        )
    return ACTIVATIONS[name]


def _same(cfg: dict[str, Any], a: str, b: str) -> Any:
    if cfg.get(a) != cfg.get(b, cfg.get(a)):
        raise HFImportError(f"{a} ({cfg.get(a)}) differs from {b} ({cfg.get(b)}): not supported")
    return cfg[a]


class Source:
    """The HF weights by name, with or without the "model." prefix a task head adds."""

    def __init__(self, weights: Weights) -> None:
        self.weights = weights

    def has(self, name: str) -> bool:
        return name in self.weights or f"model.{name}" in self.weights

    def __call__(self, name: str) -> Tensor:
        for key in (name, f"model.{name}"):
            if key in self.weights:
                return self.weights[key]
        raise HFImportError(f"the weights lack {name!r}")

    def first(self, *names: str) -> Tensor:
        for name in names:
            if self.has(name):
                return self(name)
        raise HFImportError(f"the weights lack {names[0]!r}")


# -- Marian, BART, mBART, M2M100/NLLB: one layout, different norms and positions ------

def _target_vocab_size(cfg: dict[str, Any]) -> int:
    """The decoder's own vocabulary size where it has one (Marian with
    share_encoder_decoder_embeddings false), else 0: one vocabulary for both sides."""
    if cfg.get("share_encoder_decoder_embeddings", True):
        return 0
    return int(cfg.get("decoder_vocab_size") or cfg["vocab_size"])


def _tied(cfg: dict[str, Any], src: Source) -> bool:
    """Whether the output projection is the decoder's embedding: the config says so, and
    no separate lm_head weight that differs from it is saved."""
    if not src.has("lm_head.weight"):
        return True
    embed = (src("decoder.embed_tokens.weight") if _target_vocab_size(cfg)
             else src.first("shared.weight", "encoder.embed_tokens.weight"))
    head = src("lm_head.weight")
    return head.shape == embed.shape and bool(torch.equal(head, embed))


def _decoder_start(cfg: dict[str, Any]) -> int:
    """decoder_start_token_id, else bos_token_id, as generate() falls back (mBART-cc25
    leaves it unset: its decoder starts from the target's language code)."""
    start = cfg.get("decoder_start_token_id")
    return cfg["bos_token_id"] if start is None else int(start)


def bart_like_config(cfg: dict[str, Any], src: Source, **arch: Any) -> SoraConfig:
    d = cfg["d_model"]
    return SoraConfig(
        vocab_size=cfg["vocab_size"],
        d_model=d,
        n_heads=_same(cfg, "encoder_attention_heads", "decoder_attention_heads"),
        n_encoder_layers=cfg["encoder_layers"],
        n_decoder_layers=cfg["decoder_layers"],
        d_ff=_same(cfg, "encoder_ffn_dim", "decoder_ffn_dim"),
        dropout=float(cfg.get("dropout", 0.1)),
        max_source_positions=cfg["max_position_embeddings"],
        max_target_positions=cfg["max_position_embeddings"],
        activation=_activation(cfg.get("activation_function", "gelu")),
        pad_id=cfg["pad_token_id"],
        bos_id=_decoder_start(cfg),
        eos_id=cfg["eos_token_id"],
        tie_embeddings=_tied(cfg, src),
        scale_embeddings=bool(cfg.get("scale_embedding", False)),
        target_vocab_size=_target_vocab_size(cfg),
        **arch,
    )


def _bart_attention(src: Source, hf: str, ours: str, out: Weights, cross: bool) -> None:
    q, k, v, o = (f"{hf}.q_proj", f"{hf}.k_proj", f"{hf}.v_proj", f"{hf}.out_proj")
    for kind in ("weight", "bias"):
        if cross:
            out[f"{ours}.q.{kind}"] = src(f"{q}.{kind}")
            out[f"{ours}.kv.{kind}"] = torch.cat([src(f"{k}.{kind}"), src(f"{v}.{kind}")])
        else:
            out[f"{ours}.qkv.{kind}"] = torch.cat(
                [src(f"{q}.{kind}"), src(f"{k}.{kind}"), src(f"{v}.{kind}")]
            )
        out[f"{ours}.out.{kind}"] = src(f"{o}.{kind}")


def _copy(src: Source, hf: str, ours: str, out: Weights) -> None:
    out[f"{ours}.weight"] = src(f"{hf}.weight")
    out[f"{ours}.bias"] = src(f"{hf}.bias")


def bart_like_weights(src: Source, config: SoraConfig, cfg: dict[str, Any]) -> Weights:
    out: Weights = {"embed.weight": src.first("shared.weight", "encoder.embed_tokens.weight")}
    if config.target_vocab_size:
        out["target_embed.weight"] = src("decoder.embed_tokens.weight")
    for i in range(config.n_encoder_layers):
        hf, ours = f"encoder.layers.{i}", f"encoder_layers.{i}"
        _bart_attention(src, f"{hf}.self_attn", f"{ours}.attn", out, cross=False)
        _copy(src, f"{hf}.self_attn_layer_norm", f"{ours}.norm1", out)
        _copy(src, f"{hf}.fc1", f"{ours}.ffn.up", out)
        _copy(src, f"{hf}.fc2", f"{ours}.ffn.down", out)
        _copy(src, f"{hf}.final_layer_norm", f"{ours}.norm2", out)
    for i in range(config.n_decoder_layers):
        hf, ours = f"decoder.layers.{i}", f"decoder_layers.{i}"
        _bart_attention(src, f"{hf}.self_attn", f"{ours}.self_attn", out, cross=False)
        _copy(src, f"{hf}.self_attn_layer_norm", f"{ours}.norm1", out)
        _bart_attention(src, f"{hf}.encoder_attn", f"{ours}.cross_attn", out, cross=True)
        _copy(src, f"{hf}.encoder_attn_layer_norm", f"{ours}.norm2", out)
        _copy(src, f"{hf}.fc1", f"{ours}.ffn.up", out)
        _copy(src, f"{hf}.fc2", f"{ours}.ffn.down", out)
        _copy(src, f"{hf}.final_layer_norm", f"{ours}.norm3", out)
    if config.positions == "learned":
        out["source_positions.weight"] = src("encoder.embed_positions.weight")
        out["target_positions.weight"] = src("decoder.embed_positions.weight")
    if config.embedding_norm:
        _copy(src, "encoder.layernorm_embedding", "source_embed_norm", out)
        _copy(src, "decoder.layernorm_embedding", "target_embed_norm", out)
    if config.final_norms:
        _copy(src, "encoder.layer_norm", "encoder_norm", out)
        _copy(src, "decoder.layer_norm", "decoder_norm", out)
    if config.final_logits_bias:
        out["logits_bias"] = src("final_logits_bias").reshape(-1)
    if not config.tie_embeddings:
        out["lm_head.weight"] = src.first("lm_head.weight")
    return out


def marian_config(cfg: dict[str, Any], src: Source) -> SoraConfig:
    """Marian: post-norm, sinusoidal halves, a final logits bias; with
    share_encoder_decoder_embeddings false, the decoder's own vocabulary of
    decoder_vocab_size (its embedding, the tied lm_head and the bias)."""
    return bart_like_config(cfg, src, norm_placement="post", final_norms=False,
                            positions="sinusoidal-halves", final_logits_bias=True)


def bart_config(cfg: dict[str, Any], src: Source) -> SoraConfig:
    return bart_like_config(cfg, src, norm_placement="post", final_norms=False, embedding_norm=True,
                            positions="learned", position_offset=2, final_logits_bias=True)


def mbart_config(cfg: dict[str, Any], src: Source) -> SoraConfig:
    """mBART: pre-norm with final norms and BART's embedding norm, learned positions."""
    return bart_like_config(cfg, src, embedding_norm=True, positions="learned",
                            position_offset=2, final_logits_bias=True)


def m2m100_config(cfg: dict[str, Any], src: Source) -> SoraConfig:
    """M2M100 and NLLB: pre-norm with final norms, fairseq's sinusoidal positions from
    pad + 1 (= 2), no final logits bias."""
    if cfg["pad_token_id"] != 1:
        raise HFImportError(f"pad_token_id {cfg['pad_token_id']}: M2M100's positions start at "
                            "pad + 1 and only pad 1 (every released model) is supported")
    return bart_like_config(cfg, src, positions="sinusoidal-fairseq", position_offset=2)


# -- T5, Flan-T5, mT5 ------------------------------------------------------------------

def t5_config(cfg: dict[str, Any], src: Source) -> SoraConfig:
    proj = cfg.get("feed_forward_proj", "relu")
    gated = proj.startswith("gated-")
    act = "gelu_new" if proj == "gated-gelu" else proj.removeprefix("gated-")
    activation = _activation(act)
    if gated:
        if activation not in ("gelu_new", "silu"):
            raise HFImportError(f"feed_forward_proj {proj!r} is not supported")
        activation = "gated-gelu" if activation == "gelu_new" else "gated-silu"
    d_attention = cfg["num_heads"] * cfg["d_kv"]
    return SoraConfig(
        vocab_size=cfg["vocab_size"],
        d_model=cfg["d_model"],
        n_heads=cfg["num_heads"],
        n_encoder_layers=cfg["num_layers"],
        n_decoder_layers=cfg.get("num_decoder_layers") or cfg["num_layers"],
        d_ff=cfg["d_ff"],
        dropout=float(cfg.get("dropout_rate", 0.1)),
        # Relative positions have no table: the limit is Sora's own guard on length.
        max_source_positions=512,
        max_target_positions=512,
        activation=activation,
        pad_id=cfg["pad_token_id"],
        bos_id=cfg.get("decoder_start_token_id", cfg["pad_token_id"]),
        eos_id=cfg["eos_token_id"],
        tie_embeddings=_tied(cfg, src),
        norm="rmsnorm",
        norm_eps=float(cfg.get("layer_norm_epsilon", 1e-6)),
        positions="relative",
        relative_buckets=cfg.get("relative_attention_num_buckets", 32),
        relative_max_distance=cfg.get("relative_attention_max_distance", 128),
        scale_embeddings=False,
        linear_bias=False,
        d_attention=0 if d_attention == cfg["d_model"] else d_attention,
    )


def t5_weights(src: Source, config: SoraConfig, cfg: dict[str, Any]) -> Weights:
    q_scale = math.sqrt(config.head_dim)  # T5 does not scale scores; Sora's attention does
    out: Weights = {"embed.weight": src.first("shared.weight", "encoder.embed_tokens.weight")}

    def ffn(hf: str, ours: str) -> None:
        if config.activation.startswith("gated-"):
            out[f"{ours}.gate.weight"] = src(f"{hf}.DenseReluDense.wi_0.weight")
            out[f"{ours}.up.weight"] = src(f"{hf}.DenseReluDense.wi_1.weight")
        else:
            out[f"{ours}.up.weight"] = src(f"{hf}.DenseReluDense.wi.weight")
        out[f"{ours}.down.weight"] = src(f"{hf}.DenseReluDense.wo.weight")

    for i in range(config.n_encoder_layers):
        hf, ours = f"encoder.block.{i}.layer", f"encoder_layers.{i}"
        a = f"{hf}.0.SelfAttention"
        out[f"{ours}.attn.qkv.weight"] = torch.cat(
            [src(f"{a}.q.weight") * q_scale, src(f"{a}.k.weight"), src(f"{a}.v.weight")])
        out[f"{ours}.attn.out.weight"] = src(f"{a}.o.weight")
        out[f"{ours}.norm1.weight"] = src(f"{hf}.0.layer_norm.weight")
        ffn(f"{hf}.1", f"{ours}.ffn")
        out[f"{ours}.norm2.weight"] = src(f"{hf}.1.layer_norm.weight")
    for i in range(config.n_decoder_layers):
        hf, ours = f"decoder.block.{i}.layer", f"decoder_layers.{i}"
        a, c = f"{hf}.0.SelfAttention", f"{hf}.1.EncDecAttention"
        out[f"{ours}.self_attn.qkv.weight"] = torch.cat(
            [src(f"{a}.q.weight") * q_scale, src(f"{a}.k.weight"), src(f"{a}.v.weight")])
        out[f"{ours}.self_attn.out.weight"] = src(f"{a}.o.weight")
        out[f"{ours}.norm1.weight"] = src(f"{hf}.0.layer_norm.weight")
        out[f"{ours}.cross_attn.q.weight"] = src(f"{c}.q.weight") * q_scale
        out[f"{ours}.cross_attn.kv.weight"] = torch.cat([src(f"{c}.k.weight"),
                                                          src(f"{c}.v.weight")])
        out[f"{ours}.cross_attn.out.weight"] = src(f"{c}.o.weight")
        out[f"{ours}.norm2.weight"] = src(f"{hf}.1.layer_norm.weight")
        ffn(f"{hf}.2", f"{ours}.ffn")
        out[f"{ours}.norm3.weight"] = src(f"{hf}.2.layer_norm.weight")
    bias = "block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    out["encoder_bias.embedding.weight"] = src(f"encoder.{bias}")
    out["decoder_bias.embedding.weight"] = src(f"decoder.{bias}")
    out["encoder_norm.weight"] = src("encoder.final_layer_norm.weight")
    decoder_norm = src("decoder.final_layer_norm.weight")
    # T5 v1.0 scales the decoder output by d_model**-0.5, v1.1 does not: configs say so
    # by scale_decoder_outputs (transformers >= 5) or tie_word_embeddings false (before).
    if cfg.get("scale_decoder_outputs", cfg.get("tie_word_embeddings", True) is not False):
        decoder_norm = decoder_norm * config.d_model**-0.5
    if not config.tie_embeddings:
        out["lm_head.weight"] = src("lm_head.weight")
    out["decoder_norm.weight"] = decoder_norm
    return out


@dataclass(frozen=True)
class Family:
    architecture: str  # the manifest's `architecture`
    config: Callable[[dict[str, Any], Source], SoraConfig]
    weights: Callable[[Source, SoraConfig, dict[str, Any]], Weights]


# config.json's model_type -> family.
FAMILIES = {
    "marian": Family("marian", marian_config, bart_like_weights),
    "bart": Family("bart", bart_config, bart_like_weights),
    "mbart": Family("mbart", mbart_config, bart_like_weights),
    "m2m_100": Family("m2m100", m2m100_config, bart_like_weights),
    "t5": Family("t5", t5_config, t5_weights),
    "mt5": Family("t5", t5_config, t5_weights),
}


def family_of(cfg: dict[str, Any]) -> Family:
    model_type = cfg.get("model_type")
    if model_type not in FAMILIES:
        raise HFImportError(
            f"unsupported architecture {model_type!r}; supported: {', '.join(sorted(FAMILIES))}"
        )
    if not cfg.get("is_encoder_decoder", True):
        raise HFImportError("only encoder-decoder models can be imported")
    return FAMILIES[model_type]
