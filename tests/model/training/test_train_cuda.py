"""Training on a CUDA device with bf16 autocast (run by scripts/gpu_check.sh; skipped
without a GPU): one step's loss and gradients against fp32, and the tiny recipe end to
end, as `sora train` runs it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.checkpoint import load_checkpoint
from model.generation import generate
from model.sampling import DecodingParams
from model.sora import Sora
from model.training.plot import read_metrics

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def loss_and_grads(model: Sora, src: torch.Tensor, tgt: torch.Tensor,
                   bf16: bool) -> tuple[float, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
        logits = model(src, tgt[:, :-1]).logits
    loss = F.cross_entropy(logits.float().transpose(1, 2), tgt[:, 1:],
                           ignore_index=model.config.pad_id)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return float(loss.detach()), grads


def test_bf16_autocast_step_matches_fp32(tiny_model: Sora) -> None:
    model = copy.deepcopy(tiny_model).to("cuda").train()  # the tiny config has no dropout
    g = torch.Generator().manual_seed(0)
    src = torch.randint(3, model.config.vocab_size, (8, 20), generator=g)
    tgt = torch.randint(3, model.config.vocab_size, (8, 12), generator=g)
    src[::2, 12:] = model.config.pad_id  # a padded batch
    tgt[:, 0] = model.config.bos_id
    src, tgt = src.cuda(), tgt.cuda()
    loss32, grads32 = loss_and_grads(model, src, tgt, bf16=False)
    loss16, grads16 = loss_and_grads(model, src, tgt, bf16=True)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights
    assert np.isfinite(loss16) and abs(loss16 - loss32) < 0.02 * loss32
    cosine = F.cosine_similarity(grads16, grads32, dim=0)
    assert cosine > 0.99, float(cosine)


def test_tiny_recipe_trains_on_cuda_in_bf16(
    tmp_path: Path, tiny_data: Path, train_cli: Callable[..., object]
) -> None:
    out = tmp_path / "run"
    train_cli("tiny", "--data", str(tiny_data), "--out", str(out), "--device", "cuda",
              "--set", "precision=bf16")
    rows = read_metrics(out / "metrics.jsonl")
    train = [r for r in rows if r["kind"] == "train"]
    assert train and all(np.isfinite(r["loss"]) for r in train)
    pre = [r["loss"] for r in train if r["stage"] == "pretrain"]
    assert pre[-1] < pre[0]
    ckpt = load_checkpoint(out / "final", "cuda")
    src = ckpt.tokenizer.source_ids("translate", "a library for images", target_lang="de")
    (r,) = generate(ckpt.model, ckpt.tokenizer, [src], DecodingParams(max_new_tokens=8))
    assert 1 <= len(r.token_ids) <= 8
