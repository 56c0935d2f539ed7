"""benchmarks/loadtest.py: its pure parts, and one small bounded run against the live
server (the same driver a user points at a deployment)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest

from benchmarks.loadtest import main, parse_mix, percentile


def test_parse_mix() -> None:
    assert parse_mix("translate=2,summarize=1, answer") == {
        "translate": 2.0, "summarize": 1.0, "answer": 1.0}
    for bad in ("translate=x", "dance=1", "translate=0", "translate=-1", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_mix(bad)


def test_percentile_interpolates() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 50) == 2.5
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert math.isnan(percentile([], 99))


def test_bounds_are_enforced() -> None:
    for argv in (["--requests", "0"], ["--duration", "99999"], ["--concurrency", "5000"]):
        with pytest.raises(SystemExit):
            main(argv)


def test_run_against_live_server(
    live_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Short inputs: the tiny test model has 64 source positions.
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("\n".join(json.dumps(row) for row in (
        {"task": "translate", "text": "Hello world.", "target_lang": "de"},
        {"task": "summarize", "text": "The meeting covered budgets and hiring."},
        {"task": "answer", "question": "Capital of France?", "context": "Paris."},
    )))
    out = tmp_path / "report.json"
    rc = main(["--url", live_server.http_url, "--concurrency", "3", "--requests", "12",
               "--duration", "60", "--max-new-tokens", "4", "--warmup", "1",
               "--inputs", str(inputs), "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "translate" in printed and "p99 ms" in printed
    report = json.loads(out.read_text())
    assert report["stopped_by"] == "requests"
    overall = report["overall"]
    assert overall["requests"] == 12 and overall["ok"] == 12, overall["errors"]
    assert overall["latency_s"]["p99"] >= overall["latency_s"]["p50"] > 0
    assert sum(t["requests"] for t in report["tasks"].values()) == 12


def test_duration_bounds_the_run(live_server: Any, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    main(["--url", live_server.http_url, "--concurrency", "2", "--requests", "1000000",
          "--duration", "1", "--max-new-tokens", "2", "--warmup", "0", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["stopped_by"] == "duration"
    assert report["wall_s"] < 30
