"""A real Prometheus scrapes a running server's /metrics and its query API returns
Sora's series (Debian's `prometheus` package; scripts/setup.sh installs it)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus not installed (apt-get install prometheus; scripts/setup.sh does)",
)
SCRAPE_LIMIT_S = 60.0  # a safety limit on waiting for the first scrapes, not a check


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def prometheus(server: Any, tmp_path: Path) -> Iterator[str]:
    target = urlparse(server.http_url).netloc
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: sora\n    scrape_interval: 1s\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def query(base: str, expr: str) -> list[dict[str, Any]]:
    try:
        r = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    except httpx.TransportError:
        return []
    if r.status_code != 200:
        return []
    return r.json()["data"]["result"]


def test_prometheus_scrapes_sora_series(server: Any, prometheus: str) -> None:
    with httpx.Client(base_url=server.http_url, timeout=60) as c:
        for _ in range(3):
            r = c.post("/v1/answer", json={"question": "What is it?", "context": "A tool.",
                                           "options": {"max_new_tokens": 2}})
            assert r.status_code == 200
    expr = 'sora_requests_total{task="answer",protocol="http",outcome=~"eos|length"}'
    end = time.monotonic() + SCRAPE_LIMIT_S
    result: list[dict[str, Any]] = []
    while time.monotonic() < end:
        result = query(prometheus, f"sum({expr})")
        if result and float(result[0]["value"][1]) >= 3:
            break
        time.sleep(0.5)
    assert result, "Prometheus never returned sora_requests_total"
    assert float(result[0]["value"][1]) >= 3
    up = query(prometheus, 'up{job="sora"}')
    assert up and up[0]["value"][1] == "1"
    info = query(prometheus, "sora_model_info")
    assert info and info[0]["metric"]["model"] == "tiny"
    ttft = query(prometheus, 'sora_time_to_first_token_seconds_count{task="answer"}')
    assert ttft and float(ttft[0]["value"][1]) >= 3
