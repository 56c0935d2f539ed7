"""benchmarks/startup.py: its arguments, and one real cold+cached pair of `sora serve`
starts with compiling off (compiling is tens of seconds; the README has those figures)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.startup import main, median, parse_args


def test_defaults_and_validation() -> None:
    args = parse_args([])
    assert args.model_repository == Path("checkpoints/sora-default")
    assert (args.runs, args.compile, args.throughput) == (3, "background", False)
    with pytest.raises(SystemExit):
        parse_args(["--runs", "0"])  # without --throughput: nothing to do
    assert median([3.0, None, 1.0, 2.0]) == 2.0 and median([None]) is None


def test_times_an_eager_server_cold_and_cached(
    tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--model-repository", str(tiny_checkpoint), "--runs", "1",
                 "--compile", "off"]) == 0
    out, err = capsys.readouterr()
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["cold", "cached"]
    assert all(r[1] == "1" and float(r[2]) > 0 and r[3] == "-" for r in rows)
    assert "run 1 cold: ready" in err and "'tiny': 'off'" in err
