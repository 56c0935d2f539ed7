"""Scale-out: `torchrun --nproc_per_node=2` (gloo, CPU) takes the same steps as one
process. Every rank trains on its half of each global batch; losses are normalised by
the global token count, so the averaged gradients equal the one-process gradients."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.training.plot import read_metrics

ROOT = Path(__file__).resolve().parents[3]
TINY_DATA = ROOT / "tests" / "fixtures" / "train-tiny"
ARGS = ["train", "tiny", "--data", str(TINY_DATA), "--no-progress", "--set", "model.dropout=0",
        "--stages", "tokenizer,pretrain,finetune"]


def _run(cmd: list[str], out: Path, *extra: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*cmd, "--log-level", "WARNING", *ARGS, *extra, "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _key_bias_free(name: str, t: torch.Tensor, d: int) -> torch.Tensor:
    """Attention key biases get an exactly-zero gradient in theory (softmax ignores a
    constant added to every score), so their updates are Adam-normalised float noise
    that differs with summation order; leave them out of the comparison."""
    t = t.clone()
    if name.endswith("qkv.bias"):
        t[d : 2 * d] = 0
    if name.endswith("cross_attn.kv.bias"):
        t[:d] = 0
    return t


TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which(
    "torchrun")
needs_torchrun = pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed")


def _one_and_two(tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    """OUT of the same run in one process and in two (torchrun)."""
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, "-m", "cli.main"], one, *extra)
    _run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "cli.main"], two, *extra)
    return one, two


@needs_torchrun
def test_two_processes_take_the_same_steps_as_one(tmp_path: Path) -> None:
    one, two = _one_and_two(tmp_path)
    _assert_same_run(one, two, ("pretrain", "finetune"))


@needs_torchrun
def test_fine_tuning_init_from_on_two_processes_matches_one(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    one, two = _one_and_two(tmp_path, "--stages", "finetune", "--set",
                            f"init_from={tiny_checkpoint}")
    _assert_same_run(one, two, ("finetune",))
    manifest = json.loads((two / "final" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["init_from"]["path"] == str(tiny_checkpoint.resolve())


def _assert_same_run(one: Path, two: Path, stages: tuple[str, ...]) -> None:
    rows1, rows2 = read_metrics(one / "metrics.jsonl"), read_metrics(two / "metrics.jsonl")
    keys = [(r["stage"], r["step"], r["kind"]) for r in rows2]
    assert len(keys) == len(set(keys)), "only rank 0 writes metrics"
    assert keys == [(r["stage"], r["step"], r["kind"]) for r in rows1]
    for a, b in zip(rows1, rows2, strict=True):
        for k in ("loss", "valid_loss", "valid_token_acc"):
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-4), (a, b)
        if "tokens" in a:
            assert a["tokens"] == b["tokens"]  # same data, split between the ranks

    d = 32  # tiny d_model
    for stage in stages:
        w1 = load_file(str(one / stage / "model.safetensors"))
        w2 = load_file(str(two / stage / "model.safetensors"))
        for name, t in w1.items():
            diff = (_key_bias_free(name, t, d) - _key_bias_free(name, w2[name], d)).abs().max()
            assert float(diff) < 1e-4, f"{stage}: {name} differs by {float(diff)}"
