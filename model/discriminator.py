"""The discriminator: does this output read like a reference for this source?

A Sora encoder (initialised from the generator's encoder, so it starts out knowing the
languages) reads `source </s> <sep> candidate </s>`; the masked mean of its states goes
through a small MLP to one logit, P(reference). It is saved inside the generator's
checkpoint as two extra files, hashed by the manifest like the weights:

    discriminator.safetensors   its weights
    discriminator.json          its shape (encoder SoraConfig fields + head width)

`score_candidates` scores an n-best list with it: serving reranks beam outputs by it
(`rerank`), so this module is model code that training and serving both import.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save
from torch import Tensor, nn

from model.checkpoint import MANIFEST, CheckpointError
from model.config import SoraConfig
from model.layers import EncoderLayer
from model.positions import sinusoidal_table
from model.sora import Sora
from model.tokenizer import SoraTokenizer

WEIGHTS_FILE = "discriminator.safetensors"
CONFIG_FILE = "discriminator.json"


@dataclass(frozen=True)
class DiscriminatorConfig:
    encoder: SoraConfig  # only the embedding/encoder fields are used
    hidden: int = 256
    max_source_len: int = 128  # the source part of an input is cut to this
    max_candidate_len: int = 128

    @property
    def max_positions(self) -> int:
        return self.max_source_len + self.max_candidate_len + 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "encoder": self.encoder.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiscriminatorConfig:
        data = dict(data)
        return cls(encoder=SoraConfig.from_dict(data.pop("encoder")), **data)


class Discriminator(nn.Module):
    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        c = config.encoder
        self.pad_id = c.pad_id
        # The same parameter names as Sora's, so the generator's encoder loads directly.
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=c.pad_id)
        self.embed_scale = math.sqrt(c.d_model)
        self.register_buffer("pos_table", sinusoidal_table(config.max_positions, c.d_model),
                             persistent=False)
        self.dropout = nn.Dropout(c.dropout)
        self.encoder_layers = nn.ModuleList(EncoderLayer(c) for _ in range(c.n_encoder_layers))
        self.encoder_norm = nn.LayerNorm(c.d_model)
        self.head = nn.Sequential(
            nn.Linear(c.d_model, config.hidden), nn.Tanh(), nn.Linear(config.hidden, 1)
        )

    @classmethod
    def from_generator(cls, generator: Sora, config: DiscriminatorConfig) -> Discriminator:
        disc = cls(config)
        own = disc.state_dict()
        shared = {k: v for k, v in generator.state_dict().items()
                  if k in own and own[k].shape == v.shape}
        disc.load_state_dict(shared, strict=False)
        return disc

    def forward(self, ids: Tensor) -> Tensor:
        """ids: (batch, len) right-padded pairs. Returns (batch,) logits of P(reference)."""
        valid = ids != self.pad_id  # (batch, len)
        positions = torch.arange(ids.shape[1], device=ids.device)
        table: Tensor = self.pos_table  # type: ignore[assignment]
        x = self.dropout(self.embed(ids) * self.embed_scale + table[positions])
        mask = None if bool(valid.all()) else valid[:, None, None, :]
        for layer in self.encoder_layers:
            x = layer(x, mask)
        x = self.encoder_norm(x)  # (batch, len, d_model)
        w = valid.to(x.dtype)[:, :, None]
        pooled = (x * w).sum(1) / w.sum(1).clamp(min=1.0)  # (batch, d_model)
        return self.head(pooled).squeeze(-1)


def pair_ids(
    source: Sequence[int], candidate: Sequence[int], sep_id: int, eos_id: int,
    config: DiscriminatorConfig,
) -> list[int]:
    """`source </s> <sep> candidate </s>`; `source` already ends with </s>."""
    src = list(source)[: config.max_source_len]
    cand = [t for t in candidate if t != eos_id][: config.max_candidate_len - 1]
    return [*src, sep_id, *cand, eos_id]


def pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
    return out.to(device)


def to_files(disc: Discriminator) -> dict[str, bytes]:
    """The extra files that carry `disc` inside a checkpoint."""
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in disc.state_dict().items()}
    return {
        WEIGHTS_FILE: save(tensors, metadata={"format": "pt"}),
        CONFIG_FILE: (json.dumps(disc.config.to_dict(), indent=2) + "\n").encode(),
    }


def has_discriminator(manifest: dict[str, Any]) -> bool:
    """Whether a checkpoint's manifest lists a discriminator (both of its files)."""
    files = manifest.get("files") or {}
    return WEIGHTS_FILE in files and CONFIG_FILE in files


def load_discriminator(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    manifest: dict[str, Any] | None = None,
) -> Discriminator:
    """The discriminator stored in checkpoint directory `path`, in eval mode.

    Only files the manifest lists are read, and each one's bytes are checked against its
    sha256 there before use (the bytes read are the bytes loaded: no pickle, no window
    for a swap). `manifest`: the checkpoint's, when the caller has it already."""
    path = Path(path)
    if manifest is None:
        manifest = json.loads((path / MANIFEST).read_text("utf-8"))
    if not has_discriminator(manifest):
        raise FileNotFoundError(f"{path}: this checkpoint carries no discriminator")
    data = {}
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        raw = (path / name).read_bytes()
        if hashlib.sha256(raw).hexdigest() != manifest["files"][name].get("sha256"):
            raise CheckpointError(path / name, "sha256 mismatch: the file is corrupted or was "
                                  "modified")
        data[name] = raw
    try:
        config = DiscriminatorConfig.from_dict(json.loads(data[CONFIG_FILE].decode("utf-8")))
        disc = Discriminator(config)
        disc.load_state_dict(load(data[WEIGHTS_FILE]))
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        raise CheckpointError(path / WEIGHTS_FILE, f"unusable discriminator: {e}") from e
    return disc.to(device=device, dtype=dtype or torch.float32).eval()


@torch.inference_mode()
def score_candidates(
    disc: Discriminator,
    tokenizer: SoraTokenizer,
    source: Sequence[int],
    candidates: Sequence[Sequence[int]],
    batch_size: int = 64,
) -> list[float]:
    """log P(reference) of each candidate (token ids) for one source (encoder ids with
    task prefix and </s>); higher is better. Use it to rerank an n-best list."""
    device = next(disc.parameters()).device
    rows = [pair_ids(source, c, tokenizer.sep_id, tokenizer.eos_id, disc.config)
            for c in candidates]
    out: list[float] = []
    for i in range(0, len(rows), batch_size):
        logits = disc(pad(rows[i : i + batch_size], tokenizer.pad_id, device))
        out.extend(torch.nn.functional.logsigmoid(logits.float()).tolist())
    return out


def rerank(
    disc: Discriminator,
    tokenizer: SoraTokenizer,
    source: Sequence[int],
    candidates: Sequence[Sequence[int]],
) -> list[tuple[int, float]]:
    """(index into `candidates`, score) of an n-best list, the discriminator's favourite
    first; scored in one batch, and stable, so ties keep the given (beam) order."""
    scores = score_candidates(disc, tokenizer, source, candidates)
    return sorted(enumerate(scores), key=lambda p: -p[1])
