"""benchmarks/load.py: the servers it starts get their own thread settings, not the
load generator's; rounds alternate engine-level and server runs and summarise them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.load import main, over_rounds, parse_args, server_env


def test_server_env_drops_client_thread_limits() -> None:
    env = server_env({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PATH": "/bin"},
                     torch_threads=2, max_batch_sequences=None)
    assert env == {"PATH": "/bin", "SORA_TORCH_THREADS": "2"}


def test_server_threads_default_leaves_the_server_its_own() -> None:
    args = parse_args(["--model-repository", "x"])
    assert args.server_threads is None
    assert server_env({"OMP_NUM_THREADS": "1"}, torch_threads=args.server_threads) == {}


def test_over_rounds_takes_medians_and_the_share_of_each_rounds_engine() -> None:
    def row(proto: str, tok_s: float) -> dict[str, object]:
        return {"server": "batched", "proto": proto, "clients": 64, "tok/s": tok_s}

    rows = [row("engine", 100), row("grpc", 90), row("engine", 200), row("grpc", 100),
            row("engine", 100), row("grpc", 95)]
    summary = over_rounds(rows, 3)
    assert [s["median tok/s"] for s in summary] == [100, 95]
    assert summary[1]["median % of engine"] == 90.0  # of 90%, 50%, 95%
    assert "median % of engine" not in over_rounds(rows[1::2], 3)[0]


def test_engine_core_grpc_and_http_rounds_on_a_real_server(
    tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--model-repository", str(tiny_checkpoint), "--protocol", "engine,core,grpc,http",
                 "--concurrency", "2", "--requests", "4", "--max-new-tokens", "3",
                 "--server-threads", "1", "--json"])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()
            if line.startswith("{")]
    # One round: each engine-level run is a fresh process; over_rounds is tested above.
    assert [r["proto"] for r in rows] == ["engine", "core", "grpc", "http"]
    assert all(r["requests"] == 4 and r["errors"] == 0 for r in rows)
    assert all(r["tok/s"] > 0 for r in rows)
