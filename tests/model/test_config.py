"""SoraConfig: validation names the broken field; files round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.config import ConfigError, SoraConfig


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d_model": 100, "n_heads": 3}, "d_model (100) must be divisible by n_heads (3)"),
        ({"vocab_size": 0}, "vocab_size must be a positive integer, got 0"),
        ({"d_ff": -4}, "d_ff must be a positive integer, got -4"),
        ({"n_heads": 2.0}, "n_heads must be a positive integer, got 2.0"),
        ({"n_decoder_layers": 0}, "n_decoder_layers must be an integer >= 1, got 0"),
        ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        ({"activation": "swish"}, "activation must be one of ('gelu', 'relu', 'gelu_new', "
                                  "'silu', 'gated-gelu', 'gated-silu'), got 'swish'"),
        ({"norm": "batchnorm"}, "norm must be one of ('layernorm', 'rmsnorm'), got 'batchnorm'"),
        ({"positions": "rotary"}, "positions must be one of ('sinusoidal', 'sinusoidal-halves', "
                                  "'sinusoidal-fairseq', 'learned', 'relative'), got 'rotary'"),
        ({"position_offset": -1}, "position_offset must be an integer >= 0, got -1"),
        ({"positions": "sinusoidal-halves", "d_model": 9, "n_heads": 3},
         "positions 'sinusoidal-halves' need an even d_model"),
        ({"eos_id": 8000}, "eos_id must be a token id below vocab_size, got 8000"),
        ({"pad_id": -1}, "pad_id must be a token id below vocab_size, got -1"),
        ({"target_vocab_size": -1}, "target_vocab_size must be an integer >= 0, got -1"),
        ({"target_vocab_size": 100, "eos_id": 100},
         "eos_id must be a token id below target_vocab_size, got 100"),
        ({"vocab_size": 100, "target_vocab_size": 8000, "pad_id": 100},
         "pad_id must be a token id below vocab_size, got 100"),
    ],
)
def test_invalid_config_message(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        SoraConfig(**overrides)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_defaults_and_head_dim() -> None:
    cfg = SoraConfig()
    assert (cfg.d_model, cfg.n_heads, cfg.head_dim) == (256, 4, 64)
    assert (cfg.target_vocab_size, cfg.decoder_vocab_size) == (0, cfg.vocab_size)
    assert SoraConfig(target_vocab_size=500).decoder_vocab_size == 500


def test_file_round_trip(tmp_path: Path) -> None:
    cfg = SoraConfig(vocab_size=1000, d_model=64, n_heads=8, d_ff=128, activation="relu")
    path = tmp_path / "config.json"
    cfg.to_file(path)
    assert json.loads(path.read_text(encoding="utf-8"))["d_model"] == 64
    assert SoraConfig.from_file(path) == cfg


def test_unknown_keys_rejected(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"d_model": 64, "n_layers": 6, "alpha": 1}), encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown config keys: alpha, n_layers"):
        SoraConfig.from_file(path)


def test_invalid_value_in_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"d_model": 30, "n_heads": 4}), encoding="utf-8")
    with pytest.raises(ConfigError, match="must be divisible"):
        SoraConfig.from_file(path)
