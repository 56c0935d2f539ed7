"""`sora serve` as a real process: SIGTERM with requests in flight drains them (all
complete 200), then the process exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import announced_ports

REPO = Path(__file__).resolve().parents[2]
LIMIT_S = 120.0  # safety limit on waits, not a check
LONG = {"max_new_tokens": 500, "ignore_eos": True}


def prefilled(base: str) -> float:
    """Sequences admitted so far (rows of every prefill step): it only grows, so unlike
    the running/waiting gauges it cannot miss requests that finish early."""
    text = httpx.get(base + "/metrics", timeout=10).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "sora_batch_size_sum" and s.labels.get("kind") == "prefill")


def wait_for(cond: Any, what: str, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + LIMIT_S
    while True:
        try:
            if cond():
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise AssertionError(f"server exited ({proc.returncode}) waiting for {what}")
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def core_processes(repository: Path) -> list[int]:
    """PIDs of engine-core processes serving from `repository`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"service.engine.core" in cmd and str(repository).encode() in cmd:
            pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize("mode", ["--engine-process", "--no-engine-process"])
def test_sigterm_drains_in_flight_requests(
    service_checkpoint: Path, tmp_path: Path, mode: str
) -> None:
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1",
         "--http-port", "0", "--grpc-port", "0",
         "--model-repository", str(service_checkpoint), "--max-new-tokens", "500", mode],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "SORA_LOG_LEVEL": "INFO"},
    )
    results: list[httpx.Response] = []
    try:
        http, _ = announced_ports(tmp_path / "serve.log", proc)
        base = f"http://127.0.0.1:{http}"
        wait_for(lambda: httpx.get(base + "/health/ready").status_code == 200, "ready", proc)
        assert len(core_processes(service_checkpoint)) == (mode == "--engine-process")

        def call(task: str, body: dict[str, Any]) -> None:
            results.append(httpx.post(f"{base}/v1/{task}", json=body, timeout=LIMIT_S))

        calls = [
            ("translate", {"text": "Hello world", "target_lang": "de", "options": LONG}),
            ("translate", {"texts": ["One", "Two"], "target_lang": "fr", "options": LONG}),
            ("summarize", {"text": "A text about budgets.", "options": LONG}),
            ("answer", {"question": "What?", "context": "A tool.", "options": LONG}),
            ("translate", {"text": "Streamed", "target_lang": "es", "options": LONG,
                           "stream": True}),
        ]
        threads = [threading.Thread(target=call, args=c) for c in calls]
        before = prefilled(base)  # warm-up's, where the server counts it
        for t in threads:
            t.start()
        wait_for(lambda: prefilled(base) - before >= 6, "six sequences admitted", proc)
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(LIMIT_S)
        assert proc.wait(LIMIT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert [r.status_code for r in results] == [200] * 5, output
    for r in results:
        if r.headers["content-type"].startswith("text/event-stream"):
            assert "event: done" in r.text
        else:
            assert all(x["usage"]["completion_tokens"] == 500 for x in r.json()["results"])
    assert "shutting down" in output and "Traceback" not in output
    assert "event loop: uvloop.Loop" in output  # the default where uvloop is installed
    assert core_processes(service_checkpoint) == []  # the core drained and exited too


def test_serve_without_arguments_uses_the_shipped_checkpoint(tmp_path: Path) -> None:
    from cli.common import DEFAULT_CHECKPOINT

    if not DEFAULT_CHECKPOINT.exists():
        pytest.skip(f"the shipped checkpoint {DEFAULT_CHECKPOINT} is not built yet")
    env = {**os.environ, "SORA_HTTP_PORT": "0", "SORA_GRPC_PORT": "0",
           "SORA_LOG_LEVEL": "INFO"}
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve"], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        http, _ = announced_ports(tmp_path / "serve.log", proc)
        base = f"http://127.0.0.1:{http}"
        wait_for(lambda: httpx.get(base + "/health/ready").status_code == 200, "ready", proc)
        models = httpx.get(base + "/v1/models").json()["models"]
        assert models and models[0]["name"] == DEFAULT_CHECKPOINT.name
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(LIMIT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
