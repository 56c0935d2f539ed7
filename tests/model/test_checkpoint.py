"""Checkpoints: bitwise round trips, atomic replacement, and a distinct, precise error
for each way a checkpoint directory can be broken."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import model.checkpoint as checkpoint_module
from model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    sha256_file,
    verify_checkpoint,
)
from model.sora import Sora
from model.tokenizer import SoraTokenizer


@pytest.fixture
def ckpt(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    """A private copy of the session checkpoint, free to corrupt."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))


def rehash(path: Path, name: str) -> None:
    """Update the manifest after editing `name`, so only the edit itself is wrong."""
    manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    f = path / name
    manifest["files"][name] = {"sha256": sha256_file(f), "size": f.stat().st_size}
    (path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


def load_error(path: Path) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    return info.value


def test_round_trip_is_bitwise(
    tiny_checkpoint: Path, tiny_model: Sora, tiny_tokenizer: SoraTokenizer
) -> None:
    loaded = load_checkpoint(tiny_checkpoint)
    expected = tiny_model.state_dict()
    got = loaded.model.state_dict()
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert got[name].dtype == tensor.dtype
        assert torch.equal(got[name], tensor), name
    assert loaded.model.config == tiny_model.config
    assert not loaded.model.training
    assert loaded.tokenizer.special_ids == tiny_tokenizer.special_ids
    assert loaded.name == "tiny-test"
    m = loaded.manifest
    assert m["format_version"] == 2 and m["dtype"] == "float32"
    assert m["architecture"] == "sora" and "prompting" not in m
    assert m["parameters"] == tiny_model.num_parameters()
    assert "translate" in m["tasks"] and "de" in m["languages"]


def test_bfloat16_checkpoint(
    tiny_model: Sora, tiny_tokenizer: SoraTokenizer, tmp_path: Path
) -> None:
    path = save_checkpoint(tmp_path / "bf16", tiny_model, tiny_tokenizer, dtype="bfloat16")
    loaded = load_checkpoint(path)  # upcast to fp32 for CPU use
    for name, tensor in tiny_model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor.bfloat16().float()), name
    with pytest.raises(ValueError, match="dtype must be one of"):
        save_checkpoint(tmp_path / "x", tiny_model, tiny_tokenizer, dtype="int4")


def test_flipped_byte(ckpt: Path) -> None:
    f = ckpt / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    err = load_error(ckpt)
    assert err.path == f
    assert err.problem == "sha256 mismatch: the file is corrupted or was modified"


def test_truncated_file(ckpt: Path) -> None:
    f = ckpt / "model.safetensors"
    size = f.stat().st_size
    f.write_bytes(f.read_bytes()[:1000])
    err = load_error(ckpt)
    assert err.path == f
    assert err.problem == f"size 1000 bytes, manifest says {size} (truncated or replaced)"


@pytest.mark.parametrize("name", ["tokenizer.json", "model.safetensors", "manifest.json"])
def test_missing_file(ckpt: Path, name: str) -> None:
    (ckpt / name).unlink()
    err = load_error(ckpt)
    assert (err.path, err.problem) == (ckpt / name, "missing file")


def test_not_a_directory(tmp_path: Path) -> None:
    err = load_error(tmp_path / "nowhere")
    assert err.problem == "not a checkpoint directory"


def test_wrong_shape(ckpt: Path) -> None:
    config = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    config["d_ff"] = 2 * config["d_ff"]
    (ckpt / "config.json").write_text(json.dumps(config), encoding="utf-8")
    rehash(ckpt, "config.json")
    verify_checkpoint(ckpt)  # hashes agree; the weights and config do not
    err = load_error(ckpt)
    assert err.path == ckpt / "model.safetensors"
    d, ff = config["d_model"], config["d_ff"]
    # The first mismatching tensor in file order is reported.
    assert err.problem == (
        f"weight decoder_layers.0.ffn.down.weight has shape ({d}, {ff // 2}), "
        f"config implies ({d}, {ff})"
    )


def test_missing_weights(ckpt: Path) -> None:
    config = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    config["n_decoder_layers"] += 1
    (ckpt / "config.json").write_text(json.dumps(config), encoding="utf-8")
    rehash(ckpt, "config.json")
    err = load_error(ckpt)
    assert err.problem.startswith("weights do not match config: missing ['decoder_layers.2.")


def test_invalid_config(ckpt: Path) -> None:
    config = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    config["n_heads"] = 5
    (ckpt / "config.json").write_text(json.dumps(config), encoding="utf-8")
    rehash(ckpt, "config.json")
    err = load_error(ckpt)
    assert err.path == ckpt / "config.json"
    assert err.problem == "invalid config: d_model (32) must be divisible by n_heads (5)"


def test_unknown_format_version(ckpt: Path) -> None:
    manifest = json.loads((ckpt / "manifest.json").read_text(encoding="utf-8"))
    manifest["format_version"] = 99
    (ckpt / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    err = load_error(ckpt)
    assert err.path == ckpt / "manifest.json"
    assert err.problem == "unknown format version 99 (this Sora reads 1, 2)"


def test_malformed_json(ckpt: Path) -> None:
    (ckpt / "manifest.json").write_text('{"format_version": 2,', encoding="utf-8")
    err = load_error(ckpt)
    assert err.path == ckpt / "manifest.json"
    assert err.problem.startswith("malformed JSON: Expecting property name")


def test_malformed_config_json(ckpt: Path) -> None:
    (ckpt / "config.json").write_text("[1, 2", encoding="utf-8")
    rehash(ckpt, "config.json")
    err = load_error(ckpt)
    assert err.path == ckpt / "config.json"
    assert err.problem.startswith("malformed JSON:")


def test_json_not_an_object(ckpt: Path) -> None:
    (ckpt / "manifest.json").write_text("[1, 2]", encoding="utf-8")
    assert load_error(ckpt).problem == "expected a JSON object"


def test_non_utf8_json(ckpt: Path) -> None:
    (ckpt / "manifest.json").write_bytes(b'{"name": "caf\xe9"}')
    err = load_error(ckpt)
    assert err.path == ckpt / "manifest.json"
    assert err.problem == "not UTF-8 text (invalid continuation byte at byte 13)"


def test_manifest_must_list_files(ckpt: Path) -> None:
    manifest = json.loads((ckpt / "manifest.json").read_text(encoding="utf-8"))
    del manifest["files"]["tokenizer.json"]
    (ckpt / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    err = load_error(ckpt)
    assert err.problem == "must list the files config.json, model.safetensors, tokenizer.json"


def test_errors_are_distinct(ckpt: Path, tmp_path: Path) -> None:
    """Each kind of damage gets its own message (no catch-all 'invalid checkpoint')."""
    problems = set()
    for damage in ("flip", "truncate", "delete", "version", "json", "utf8"):
        path = Path(shutil.copytree(ckpt, tmp_path / damage))
        f = path / ("manifest.json" if damage in ("version", "json", "utf8") else "tokenizer.json")
        data = f.read_bytes()
        f.write_bytes({
            "flip": data[:-2] + bytes([data[-2] ^ 1]) + data[-1:],
            "truncate": data[:10],
            "delete": data,
            "version": data.replace(b'"format_version": 2', b'"format_version": 3'),
            "json": data[:-3],
            "utf8": b"\xff" + data,
        }[damage])
        if damage == "delete":
            f.unlink()
        problems.add(load_error(path).problem.split(":")[0].split(" ")[0])
    assert len(problems) == 6, problems


def test_save_replaces_existing_atomically(
    tiny_model: Sora, tiny_tokenizer: SoraTokenizer, tmp_path: Path
) -> None:
    path = tmp_path / "model"
    save_checkpoint(path, tiny_model, tiny_tokenizer, info={"name": "first"})
    (path / "stale.txt").write_text("from the old checkpoint")
    save_checkpoint(path, tiny_model, tiny_tokenizer, info={"name": "second"},
                    extra_files={"disc.bin": b"\x00\x01"})
    assert verify_checkpoint(path)["name"] == "second"
    assert not (path / "stale.txt").exists()  # replaced, not merged
    assert (path / "disc.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temp dirs left


def test_failed_save_keeps_old_checkpoint(
    tiny_model: Sora, tiny_tokenizer: SoraTokenizer, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = save_checkpoint(tmp_path / "model", tiny_model, tiny_tokenizer, info={"name": "old"})
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, tiny_model, tiny_tokenizer, info={"name": "new"})
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert verify_checkpoint(path)["name"] == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_format_version_1_loads_as_sora(ckpt: Path, tiny_model: Sora) -> None:
    """The migration: a version-1 checkpoint (config.json without the architecture
    fields, manifest without architecture/prompting) loads with every new field at
    its default and computes the same logits."""
    config = json.loads((ckpt / "config.json").read_text(encoding="utf-8"))
    v1_keys = ("vocab_size", "d_model", "n_heads", "n_encoder_layers", "n_decoder_layers",
               "d_ff", "dropout", "max_source_positions", "max_target_positions",
               "activation", "pad_id", "bos_id", "eos_id", "tie_embeddings")
    (ckpt / "config.json").write_text(json.dumps({k: config[k] for k in v1_keys}),
                                      encoding="utf-8")
    rehash(ckpt, "config.json")
    manifest = json.loads((ckpt / "manifest.json").read_text(encoding="utf-8"))
    manifest["format_version"] = 1
    del manifest["architecture"]
    (ckpt / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    loaded = load_checkpoint(ckpt)
    assert loaded.model.config == tiny_model.config
    assert loaded.tokenizer.prompting.style == "sora"
    src = torch.tensor([[5, 6, 7, 2], [8, 2, 0, 0]])
    tgt = torch.tensor([[1, 9, 10], [1, 11, 0]])
    tiny_model.eval()
    with torch.no_grad():
        assert torch.equal(loaded.model(src, tgt).logits, tiny_model(src, tgt).logits)
