"""Crash safety: a run killed with SIGKILL and resumed reaches the same weights as one
that was never interrupted (bit for bit: the data order, RNG states and optimizer state
are all part of the saved training state)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[3]
TINY_DATA = ROOT / "tests" / "fixtures" / "train-tiny"

STAGES = ("pretrain", "finetune", "adversarial", "final")


def _state_step(out: Path, stage: str) -> int:
    meta = out / ".work" / stage / "state" / "state.json"
    try:
        return int(json.loads(meta.read_text())["step"])
    except (OSError, ValueError, KeyError):
        return -1


def _kill_when(out: Path, stage: str, step: int, resume: bool) -> None:
    """Start a run and SIGKILL it once `stage` has saved a state at `step` or later."""
    cmd = [sys.executable, "-m", "cli.main", "--log-level", "WARNING", "train", "tiny",
           "--data", str(TINY_DATA), "--out", str(out), "--no-progress"]
    if resume:
        cmd.append("--resume")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 600
    try:
        while _state_step(out, stage) < step:
            if proc.poll() is not None:
                raise AssertionError(f"run ended before {stage} step {step}: "
                                     f"{proc.stderr.read().decode() if proc.stderr else ''}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{stage} never reached step {step}")
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        if proc.stderr:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert not (out / stage / "manifest.json").exists(), "killed after the stage finished"


def test_sigkill_and_resume_reach_the_same_weights(
    tiny_run: Path, tmp_path: Path, train_cli: Callable[..., Any]
) -> None:
    out = tmp_path / "run"
    _kill_when(out, "finetune", 2, resume=False)  # mid fine-tuning (grad accumulation)
    _kill_when(out, "adversarial", 1, resume=True)  # mid adversarial (sampling, discriminator)
    train_cli("tiny", "--data", str(TINY_DATA), "--out", str(out), "--resume")
    for stage in STAGES:
        want = load_file(str(tiny_run / stage / "model.safetensors"))
        got = load_file(str(out / stage / "model.safetensors"))
        assert want.keys() == got.keys()
        for name, tensor in want.items():
            assert (got[name] == tensor).all(), f"{stage}: {name} differs after resume"
    want_disc = (tiny_run / "adversarial" / "discriminator.safetensors").read_bytes()
    assert (out / "adversarial" / "discriminator.safetensors").read_bytes() == want_disc
    # metrics replayed after the kill are not duplicated
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["stage"], r["step"], r["kind"]) for r in rows]
    assert len(keys) == len(set(keys))


def test_existing_run_needs_resume(tiny_run: Path, train_cli: Callable[..., Any]) -> None:
    proc = train_cli("tiny", "--data", str(TINY_DATA), "--out", str(tiny_run), check=False)
    assert proc.returncode == 1
    assert "--resume" in proc.stderr


@pytest.mark.parametrize("change", ["model.d_model=48", "seed=8"])
def test_resume_refuses_a_different_model(
    tiny_run: Path, change: str, train_cli: Callable[..., Any]
) -> None:
    proc = train_cli("tiny", "--data", str(TINY_DATA), "--out", str(tiny_run), "--resume",
                      "--set", change, check=False)
    assert proc.returncode == 1
    assert change.split("=")[0] in proc.stderr


def test_a_larger_budget_extends_a_finished_stage(
    tiny_run: Path, tmp_path: Path, train_cli: Callable[..., Any]
) -> None:
    """Deleting a finished stage's checkpoint and resuming with more steps continues from
    its saved state (same optimizer, same data position) instead of starting over."""
    out = tmp_path / "run"
    subprocess.run(["cp", "-a", str(tiny_run), str(out)], check=True)
    for stage in ("finetune", "adversarial", "final", ".work/adversarial"):
        subprocess.run(["rm", "-rf", str(out / stage)], check=True)
    assert _state_step(out, "finetune") == 6
    train_cli("tiny", "--data", str(TINY_DATA), "--out", str(out), "--resume",
              "--stages", "tokenizer,pretrain,finetune", "--set", "finetune.max_steps=9")
    assert _state_step(out, "finetune") == 9
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["stage"] == "finetune" and r["kind"] == "train"]
    assert max(steps) == 9 and 7 in steps  # trained on from step 6, not from 0
    weights = load_file(str(out / "finetune" / "model.safetensors"))
    before = load_file(str(tiny_run / "finetune" / "model.safetensors"))
    assert any((weights[k] != before[k]).any() for k in before)
