"""benchmarks/gil_share.py: each load placement runs the real engine in a fresh process,
and the summary compares every round with that round's engine-alone run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from benchmarks.gil_share import hold_gil, main, parse_args, summarize


def test_summary_takes_medians_and_each_rounds_share_of_alone() -> None:
    def row(load: str, tok_s: float) -> dict[str, object]:
        return {"load": load, "tok/s": tok_s}

    rows = [row("alone", 100), row("thread", 80), row("process", 100),
            row("alone", 200), row("thread", 100), row("process", 190),
            row("alone", 100), row("thread", 70), row("process", 90)]
    summary = summarize(rows, 3)
    assert [s["median tok/s"] for s in summary] == [100, 80, 100]
    assert [s["median % of alone"] for s in summary] == [100.0, 70.0, 95.0]


def test_hold_gil_spins_only_for_its_duty() -> None:
    """A quarter of the wall time busy (its stretches are timed by the clock, so a busy
    machine can only lower its CPU time), and it stops when told."""
    stop = threading.Event()
    threading.Timer(0.4, stop.set).start()
    cpu0, t0 = time.thread_time(), time.perf_counter()
    hold_gil(stop, 0.25, 0.002)
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - t0
    assert 0 < cpu < 0.6 * wall


@pytest.mark.parametrize("bad", [["--duty", "0"], ["--duty", "1.5"], ["--chunk-ms", "0"]])
def test_bad_arguments_are_refused(bad: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--model-repository", "x", *bad])


def test_one_round_on_a_real_engine(tiny_checkpoint: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--model-repository", str(tiny_checkpoint), "--rounds", "1",
                 "--concurrency", "2", "--requests", "4", "--max-new-tokens", "3"])
    assert code == 0
    out = capsys.readouterr().out
    table = out.split("over 1 rounds:")[1]
    assert [line.split()[0] for line in table.strip().splitlines()[2:]] == [
        "alone", "thread", "process"]
    assert "  4  " in out.split("over 1 rounds:")[0]  # every run completed its requests
