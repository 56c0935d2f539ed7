"""Resumable training state: tensors in safetensors, everything else in JSON.

No pickle anywhere: an optimizer's state dict is flattened into named tensors plus a
JSON skeleton, and RNG states are stored as uint8 tensors. A state directory is written
under a temporary name, fsynced and renamed into place, so a run killed at any instant
(even SIGKILL) leaves either the previous complete state or the new one.

    state/tensors.safetensors   model.*, optim.*, rng.*, objective.*
    state/state.json            step, epoch, data position, best metric, ...
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

TENSORS = "tensors.safetensors"
META = "state.json"


def flatten_optimizer(state: dict[str, Any], prefix: str) -> tuple[dict[str, Tensor], Any]:
    """An optimizer `state_dict()` as (named tensors, JSON-able skeleton)."""
    tensors: dict[str, Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for idx, entries in state["state"].items():
        meta: dict[str, Any] = {}
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"{prefix}.{idx}.{key}"] = value.detach().cpu().contiguous()
                meta[key] = "tensor"
            else:
                meta[key] = value
        per_param[str(idx)] = meta
    return tensors, {"state": per_param, "param_groups": state["param_groups"]}


def unflatten_optimizer(tensors: dict[str, Tensor], skeleton: Any, prefix: str) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for idx, meta in skeleton["state"].items():
        state[int(idx)] = {
            k: tensors[f"{prefix}.{idx}.{k}"] if v == "tensor" else v for k, v in meta.items()
        }
    return {"state": state, "param_groups": skeleton["param_groups"]}


def rng_state(device: torch.device) -> Tensor:
    """This process's torch RNG state (CPU, plus the current CUDA device's when used)."""
    parts = [torch.get_rng_state()]
    if device.type == "cuda":
        parts.append(torch.cuda.get_rng_state(device))
    lengths = torch.tensor([p.numel() for p in parts], dtype=torch.int64).view(torch.uint8)
    return torch.cat([torch.tensor([len(parts)], dtype=torch.uint8), lengths, *parts])


def set_rng_state(packed: Tensor, device: torch.device) -> None:
    n = int(packed[0])
    lengths = packed[1 : 1 + 8 * n].clone().view(torch.int64).tolist()
    pos = 1 + 8 * n
    parts = []
    for length in lengths:
        parts.append(packed[pos : pos + length].clone())
        pos += length
    torch.set_rng_state(parts[0])
    if device.type == "cuda" and n > 1:
        torch.cuda.set_rng_state(parts[1], device)


def save_state(path: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Atomically replace directory `path` with these tensors and metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                  str(tmp / TENSORS))
        (tmp / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
        # leftovers of runs killed mid-save (other pids): the new state supersedes them
        for stale in [*path.parent.glob(f".{path.name}.tmp-*"),
                      *path.parent.glob(f".{path.name}.old-*")]:
            shutil.rmtree(stale, ignore_errors=True)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def find_state(path: Path) -> Path | None:
    """The complete state at `path`, or the previous one a crash left mid-rename."""
    if (path / META).is_file() and (path / TENSORS).is_file():
        return path
    for old in sorted(path.parent.glob(f".{path.name}.old-*")):
        if (old / META).is_file() and (old / TENSORS).is_file():
            return old
    return None


def load_state(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    found = find_state(path)
    if found is None:
        raise FileNotFoundError(f"{path}: no complete training state")
    meta = json.loads((found / META).read_text(encoding="utf-8"))
    return load_file(str(found / TENSORS)), meta
