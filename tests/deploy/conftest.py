"""Fixtures for the deployment checks: the repository's paths, and a real `sora serve`
process (the installed entry point, configured only through SORA_* variables as in the
container) on free loopback ports, with traffic sent so its labelled series exist."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.service.support import announced_ports

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
READY_TIMEOUT_S = 120.0


def sora_executable(python: str | Path = sys.executable) -> Path:
    """The `sora` console script beside `python` (the venv it was installed into)."""
    exe = Path(python).parent / "sora"
    if not exe.is_file():
        pytest.skip(f"no `sora` entry point beside {python}: pip install -e '.[serve]' first")
    return exe


@dataclass
class ServeProcess:
    proc: subprocess.Popen[bytes]
    http_url: str
    grpc_port: int
    log: Path

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


def start_serve(
    sora: Path, model_repository: Path, log: Path, *, env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> ServeProcess:
    """Start `sora serve` on ports it picks and wait for GET /health/ready == 200."""
    full_env = {
        # Nothing of the test process's SORA_* or PYTHONPATH leaks in.
        **{k: v for k, v in os.environ.items()
           if not k.startswith("SORA_") and k != "PYTHONPATH"},
        "SORA_HOST": "127.0.0.1",
        "SORA_HTTP_PORT": "0",
        "SORA_GRPC_PORT": "0",
        "SORA_MODEL_REPOSITORY": str(model_repository),
        "SORA_DEVICE": "cpu",
        "SORA_DRAIN_TIMEOUT_S": "10",
        "OMP_NUM_THREADS": "1",
        "SORA_COMPILE": "off",  # 30-90 s per start; tests/model covers the compiled model
        **(env or {}),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(sora), "serve"], env=full_env, stdout=out, stderr=subprocess.STDOUT,
            cwd=cwd or log.parent,
        )
    try:
        http_port, grpc_port = announced_ports(log, proc, READY_TIMEOUT_S)
    except AssertionError:
        proc.kill()
        proc.wait()
        raise
    assert grpc_port is not None
    server = ServeProcess(proc, f"http://127.0.0.1:{http_port}", grpc_port, log)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sora serve exited with {proc.returncode}:\n{server.logs()}")
        try:
            if httpx.get(f"{server.http_url}/health/ready", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    stop_serve(server)
    raise AssertionError(f"sora serve not ready after {READY_TIMEOUT_S:.0f} s:\n{server.logs()}")


def stop_serve(server: ServeProcess, timeout: float = 60.0) -> int:
    """SIGTERM (what docker stop and the kubelet send), then the exit code."""
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    return server.proc.returncode


class Serve:
    """start_serve / stop_serve as a fixture value, for tests that run their own server."""

    start = staticmethod(start_serve)
    stop = staticmethod(stop_serve)
    executable = staticmethod(sora_executable)


@pytest.fixture(scope="session")
def serve() -> type[Serve]:
    return Serve


@pytest.fixture(scope="session")
def live_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path
) -> Iterator[ServeProcess]:
    """`sora serve` over a model repository holding the tiny checkpoint as tiny/1/."""
    work = tmp_path_factory.mktemp("deploy-serve")
    repo = work / "models"
    shutil.copytree(tiny_checkpoint, repo / "tiny" / "1")
    # PYTHONPATH: this checkout's packages, even ones added after the editable install
    # (setuptools' editable finder maps only the top-level packages it saw then).
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    server = start_serve(sora_executable(), repo, work / "serve.log",
                         env={"SORA_MAX_INPUT_CHARS": "400", "PYTHONPATH": pythonpath})
    yield server
    stop_serve(server)


@pytest.fixture(scope="session")
def live_metrics_text(live_server: ServeProcess) -> str:
    """/metrics after a few successful requests of every task and a couple of failures,
    so that labelled series (tasks, outcomes, reasons, step kinds) exist."""
    url = live_server.http_url
    opts = {"max_new_tokens": 6, "min_new_tokens": 3}
    bodies = {
        "translate": {"text": "Hello world, how are you today?", "target_lang": "de"},
        "summarize": {"text": "The meeting covered budgets, hiring and the roadmap."},
        "answer": {"question": "What is the capital of France?",
                   "context": "Paris is the capital of France."},
    }
    with httpx.Client(base_url=url, timeout=60) as client:
        for task, body in bodies.items():
            try:
                r = client.post(f"/v1/{task}", json={**body, "options": opts})
            except httpx.HTTPError as e:
                raise AssertionError(f"{task}: {e!r}\n{live_server.logs()}") from e
            assert r.status_code == 200, (task, r.status_code, r.text, live_server.logs())
        # Failures: an input over SORA_MAX_INPUT_CHARS, and an unknown model.
        client.post("/v1/translate", json={"text": "x " * 400, "target_lang": "de"})
        client.post("/v1/summarize", json={"text": "hello", "model": "no-such-model"})
        r = client.get("/metrics")
        assert r.status_code == 200, r.text
        return r.text
