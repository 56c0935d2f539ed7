"""The checkpoint directory: the one contract between training and serving.

    config.json            SoraConfig
    model.safetensors      weights (no pickle anywhere)
    tokenizer.json         Hugging Face tokenizers file (the source side)
    target_tokenizer.json  only where the target side tokenizes differently or has its
                           own vocabulary (Marian's target.spm, target_vocab.json)
    manifest.json          format version, sha256/size of every file, parameter count,
                           dtype, architecture, tasks, languages (language_pairs),
                           prompting, provenance and evaluation results

Format versions. 2 (written now) adds the architecture fields of SoraConfig
(norm, positions, ...) and the manifest's `architecture`, `language_pairs` and
`prompting`. Migration from 1: none on disk. A version-1 checkpoint is read as
version 2 with every new field at its default, which is Sora's own architecture
(`architecture` "sora", Sora's task tokens, any pair of its languages), so it loads
and scores exactly as before; saving it again writes version 2. Fields added to
SoraConfig since (`d_attention`, `target_vocab_size`) default to the model before
them (0: heads span d_model; one vocabulary and embedding for both sides), so a
config.json without them loads unchanged in either version.

Saving writes a temporary sibling directory and renames it into place, so a reader
never sees a half-written checkpoint. Loading verifies every file before building the
model and reports the first problem with the file it concerns.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.config import ConfigError, SoraConfig
from model.prompting import PromptError, Prompting
from model.sora import Sora
from model.tokenizer import LANGUAGES, TASKS, SoraTokenizer, TokenizerError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
FILES = ("config.json", "model.safetensors", "tokenizer.json")
TARGET_TOKENIZER = "target_tokenizer.json"
MANIFEST = "manifest.json"
# The checkpoint shipped in the repository: `sora serve`/`generate`/`eval` use it when
# given none.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "sora-default"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CheckpointError(Exception):
    """A checkpoint that must not be used; the message names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass
class Checkpoint:
    model: Sora
    tokenizer: SoraTokenizer
    manifest: dict[str, Any]
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name if self.path else "sora"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(
    path: str | Path,
    model: Sora,
    tokenizer: SoraTokenizer,
    *,
    dtype: str = "float32",
    info: dict[str, Any] | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Atomically write `model` and `tokenizer` to directory `path` (replacing it).

    `info` (provenance, recipe, evaluation, ...) is stored in the manifest;
    `extra_files` (e.g. a discriminator's weights) are hashed like the rest."""
    path = Path(path)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would hide the checkpoint from a serving user
        model.config.to_file(tmp / "config.json")
        tensors = {
            k: v.detach().to("cpu", DTYPES[dtype]).contiguous()
            for k, v in model.state_dict().items()
        }
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save(tmp / "tokenizer.json")
        extra_files = dict(extra_files or {})
        if tokenizer.target is not None:
            extra_files[TARGET_TOKENIZER] = tokenizer.target.to_str().encode()
        for name, data in extra_files.items():
            (tmp / name).write_bytes(data)
        names = [*FILES, *sorted(extra_files)]
        manifest = {
            "format_version": FORMAT_VERSION,
            "files": {
                n: {"sha256": sha256_file(tmp / n), "size": (tmp / n).stat().st_size}
                for n in names
            },
            "parameters": model.num_parameters(),
            "dtype": dtype,
            "architecture": "sora",
            "tasks": list(TASKS),
            "languages": list(LANGUAGES),
            **({} if tokenizer.prompting.style == "sora"
               else {"prompting": tokenizer.prompting.to_dict()}),
            **(info or {}),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        for f in tmp.iterdir():
            f.chmod(0o644)
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise CheckpointError(path, f"malformed JSON: {e.msg} (line {e.lineno})") from e
    if not isinstance(data, dict):
        raise CheckpointError(path, "expected a JSON object")
    return data


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check the manifest and every file's size and sha256; return the manifest."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(path, "not a checkpoint directory")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(manifest_path, "missing file")
    manifest = _read_json(manifest_path)
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            manifest_path,
            f"unknown format version {version!r} (this Sora reads "
            f"{', '.join(map(str, READABLE_VERSIONS))})",
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or any(n not in files for n in FILES):
        raise CheckpointError(manifest_path, f"must list the files {', '.join(FILES)}")
    for name, meta in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f, "missing file")
        size = f.stat().st_size
        if size != meta.get("size"):
            raise CheckpointError(
                f, f"size {size} bytes, manifest says {meta.get('size')} (truncated or replaced)"
            )
        if sha256_file(f) != meta.get("sha256"):
            raise CheckpointError(f, "sha256 mismatch: the file is corrupted or was modified")
    return manifest


def load_tokenizer(path: str | Path, manifest: dict[str, Any]) -> SoraTokenizer:
    """The checkpoint's tokenizer with its prompting (and target side, if any), from a
    verified directory: what every caller that turns requests into ids loads."""
    path = Path(path)
    try:
        prompting = Prompting.from_manifest(manifest)
    except PromptError as e:
        raise CheckpointError(path / MANIFEST, str(e)) from e
    target = path / TARGET_TOKENIZER if TARGET_TOKENIZER in manifest.get("files", {}) else None
    try:
        return SoraTokenizer.from_file(path / "tokenizer.json", prompting, target)
    except TokenizerError as e:
        raise CheckpointError(path / "tokenizer.json", str(e)) from e
    except Exception as e:  # the tokenizers library raises its own exception types
        raise CheckpointError(path / "tokenizer.json", f"unreadable tokenizer: {e}") from e


def vocab_mismatch(tokenizer: SoraTokenizer, config: SoraConfig) -> str | None:
    """Why `tokenizer` cannot feed a model of `config` (a side with more tokens than
    the model has rows for), or None."""
    target = "target_vocab_size" if config.target_vocab_size else "vocab_size"
    for side, tokens, name in (("tokenizer", tokenizer.vocab_size, "vocab_size"),
                               ("target tokenizer", tokenizer.target_vocab_size, target)):
        if tokens > getattr(config, name):
            return f"{side} has {tokens} tokens, config {name} is {getattr(config, name)}"
    return None


def load_checkpoint(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> Checkpoint:
    """Verify, then build the model in eval mode on `device` (weights cast to `dtype`)."""
    path = Path(path)
    manifest = verify_checkpoint(path)
    try:
        config = SoraConfig.from_dict(_read_json(path / "config.json"))
    except (ConfigError, TypeError) as e:
        raise CheckpointError(path / "config.json", f"invalid config: {e}") from e
    tokenizer = load_tokenizer(path, manifest)
    mismatch = vocab_mismatch(tokenizer, config)
    if mismatch:
        raise CheckpointError(path / "tokenizer.json", mismatch)
    try:
        tensors = load_file(str(path / "model.safetensors"))
    except SafetensorError as e:
        raise CheckpointError(path / "model.safetensors", f"unreadable weights: {e}") from e
    model = Sora(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            path / "model.safetensors",
            f"weights do not match config: missing {missing[:3]}, unexpected {unexpected[:3]}",
        )
    for name, t in tensors.items():
        if t.shape != expected[name].shape:
            raise CheckpointError(
                path / "model.safetensors",
                f"weight {name} has shape {tuple(t.shape)}, config implies "
                f"{tuple(expected[name].shape)}",
            )
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    model.to(device=device, dtype=dtype or torch.float32)
    model.eval()
    return Checkpoint(model=model, tokenizer=tokenizer, manifest=manifest, path=path)
