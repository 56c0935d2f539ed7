"""A tiny training run shared by the training tests: `sora train tiny` once per session,
in a subprocess exactly as a user would run it, on the committed fixture data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
TINY_DATA = ROOT / "tests" / "fixtures" / "train-tiny"
# Tiny models gain nothing from intra-op threads, and on a busy machine spinning
# threads slow them down many times over.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def sora_train(*args: str, env: dict[str, str] | None = None, check: bool = True,
               timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`sora train ...` in a fresh interpreter, from the repository root."""
    cmd = [sys.executable, "-m", "cli.main", "--log-level", "WARNING", "train", *args,
           "--no-progress"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ONE_THREAD, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def train_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return sora_train


@pytest.fixture(scope="session")
def tiny_data() -> Path:
    return TINY_DATA


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT of an uninterrupted tiny run through every stage."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    sora_train("tiny", "--data", str(TINY_DATA), "--out", str(out))
    return out
