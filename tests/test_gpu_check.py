"""scripts/gpu_check.sh --dry-run: every step of the one-shot GPU check runs on the CPU
(the CUDA tests skip), so the script works on the day a GPU machine is lent."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

from model.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh", "--dry-run", "--out", str(out),
         "--steps", "env,tests,serve,compare,ddp", "--train-default", "0.1"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {r["step"]: r for r in json.loads((out / "summary.json").read_text())}
    assert list(rows) == ["env", "tests", "serve", "compare", "ddp", "train-default"]
    assert {r["status"] for r in rows.values()} == {"ok", "skip"}
    assert rows["ddp"]["status"] == "skip"
    # The CUDA tests were collected and skipped, none failed to import.
    assert rows["tests"]["result"].startswith("0 passed, 0 failed, ")
    assert "0 errors" in rows["serve"]["result"]
    assert (out / "summary.txt").read_text().splitlines()[0].split() == [
        "step", "status", "seconds", "result"]
    # What comes back from the GPU machine is the trained checkpoint, loadable here.
    with tarfile.open(out / "default-run.tar") as t:
        t.extractall(tmp_path, filter="data")
    ckpt = load_checkpoint(tmp_path / "default-run")
    assert ckpt.manifest["dtype"] == "float16"
    assert (tmp_path / "default-run" / "metrics.jsonl").stat().st_size > 0
    with tarfile.open(out / "logs.tar.gz") as t:
        assert {"tests.log", "serve.log", "compare.log"} <= set(t.getnames())
