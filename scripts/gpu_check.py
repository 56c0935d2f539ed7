"""The steps of scripts/gpu_check.sh (run it, not this): Sora's CUDA path checked in one
go on a lent GPU machine, every result under OUT, one summary table at the end.

Steps: the environment; the `gpu`-marked tests; the default checkpoint served on CUDA
in bf16 under a short concurrent HTTP + gRPC load; `benchmarks/compare_model.py` at
batch 1/16/64; the tiny recipe trained with bf16 autocast (and with 2-process DDP when
there are two GPUs); optionally (`--train-default MINUTES`) the `default` recipe on the
full Debian build, its checkpoint packed into OUT/default-run.tar for evaluation here.
`--dry-run` runs every step on the CPU at toy sizes (the CUDA tests skip), so CI keeps
the script working. Each step has its own time limit; one failing never stops the next.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
# The engine tests last: they import their directory's conftest as `conftest`, and
# pytest loads the conftest of every path given before collecting any.
GPU_TESTS = [
    "tests/model/test_compiled_cuda.py",
    "tests/model/training/test_train_cuda.py",
    "tests/model/test_cli.py",
    "tests/service/engine/test_engine_cuda.py",
]
TINY_DATA = ROOT / "tests" / "fixtures" / "train-tiny"
# Where --train-default finds the full `sora data debian` build: one FILE.xz per file
# (xz -9 each: ~40 MB for the ~225 MB build, so it travels within the device tool's limit).
DATA_XZ = ROOT / ".gpu" / "data"


@dataclass
class Row:
    step: str
    status: str  # ok | FAIL | skip
    seconds: float
    result: str


@dataclass
class Check:
    out: Path
    work: Path
    dry_run: bool
    device: str
    dtype: str

    def log(self, name: str) -> Path:
        return self.work / f"{name}.log"

    def run(self, name: str, cmd: list[str], timeout: float,
            env: dict[str, str] | None = None) -> int:
        """`cmd` with its output in WORK/NAME.log; 124 when it ran past `timeout`."""
        with self.log(name).open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            try:
                return subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                      timeout=timeout, env={**os.environ, **(env or {})}
                                      ).returncode
            except subprocess.TimeoutExpired:
                f.write(f"\n[gpu_check] timed out after {timeout:.0f} s\n")
                return 124

    def tail(self, name: str, lines: int = 3) -> str:
        text = self.log(name).read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])[-300:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- steps --------------------------------------------------------------------------------


def step_env(c: Check) -> tuple[str, str]:
    import torch

    if c.dry_run:
        return "ok", f"dry run on CPU; torch {torch.__version__}"
    if not torch.cuda.is_available():
        return "FAIL", f"torch {torch.__version__} sees no CUDA device"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    free, total = torch.cuda.mem_get_info()
    return "ok", (f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
                  f"{len(names)} x {names[0]}, {total / 2**30:.0f} GiB "
                  f"({free / 2**30:.0f} free), python {sys.version.split()[0]}")


def step_tests(c: Check) -> tuple[str, str]:
    xml = c.work / "gpu-tests.xml"
    rc = c.run("tests", [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider",
                         "-q", "-rfEs", f"--junitxml={xml}", *GPU_TESTS], timeout=330)
    if not xml.is_file():
        return "FAIL", f"rc {rc}: {c.tail('tests')}"
    suite = ElementTree.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    n, failed = int(suite.get("tests", 0)), int(suite.get("failures", 0)) + int(
        suite.get("errors", 0))
    skipped = int(suite.get("skipped", 0))
    passed = n - failed - skipped
    summary = f"{passed} passed, {failed} failed, {skipped} skipped"
    if rc != 0 or failed:
        return "FAIL", f"{summary}: {c.tail('tests', 6)}"
    if not c.dry_run and skipped:
        return "FAIL", f"{summary}: a CUDA test skipped on the GPU machine"
    return "ok", summary


def _wait_ready(url: str, proc: subprocess.Popen[bytes], limit_s: float) -> bool:
    end = time.monotonic() + limit_s
    while time.monotonic() < end and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health/ready", timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def step_serve(c: Check) -> tuple[str, str]:
    http, grpc = free_port(), free_port()
    url = f"http://127.0.0.1:{http}"
    cmd = [sys.executable, "-m", "cli.main", "serve", "--http-port", str(http),
           "--grpc-port", str(grpc), "--device", c.device, "--dtype", c.dtype,
           "--compile", "off"]
    log = c.log("serve-server").open("w")
    start = time.monotonic()
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        if not _wait_ready(url, server, limit_s=180):
            return "FAIL", f"not ready (rc {server.poll()}): {c.tail('serve-server')}"
        ready_s = time.monotonic() - start
        load = ["--concurrency", "2", "--requests", "8", "--max-new-tokens", "4"] if c.dry_run \
            else ["--concurrency", "4,64", "--requests", "256", "--max-new-tokens", "32"]
        rc = c.run("serve", [sys.executable, "-m", "benchmarks.load", "--url", url,
                             "--grpc-target", f"127.0.0.1:{grpc}", "--protocol", "http,grpc",
                             "--duration", "20", "--json", *load], timeout=150)
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
            metrics = r.read().decode()
        (c.work / "serve-metrics.txt").write_text(metrics)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        log.close()
    rows = [json.loads(line) for line in c.log("serve").read_text().splitlines()
            if line.startswith("{")]
    if rc != 0 or not rows:
        return "FAIL", f"load rc {rc}: {c.tail('serve')}"
    errors = sum(r["errors"] for r in rows)
    best = {p: max((r for r in rows if r["proto"] == p), key=lambda r: r["clients"])
            for p in ("http", "grpc")}
    figures = ", ".join(f"{p} x{r['clients']}: {r['tok/s']:.0f} tok/s p50 {r['p50 ms']:.0f} ms"
                        for p, r in best.items())
    status = "ok" if errors == 0 and "sora_request_duration_seconds" in metrics else "FAIL"
    return status, f"ready in {ready_s:.0f} s; {figures}; {errors} errors"


def step_compare(c: Check) -> tuple[str, str]:
    if c.dry_run:
        args = ["--engines", "sora", "--sora-precisions", "float32", "--batch-sizes", "1,2",
                "--num-sources", "4", "--new-tokens", "4", "--repeats", "1", "--threads", "1"]
    else:
        args = ["--engines", "sora,hf", "--sora-precisions",
                "float32,bfloat16,bfloat16-compiled", "--batch-sizes", "1,16,64",
                "--num-sources", "64", "--hf-num-sources", "32", "--new-tokens", "32",
                "--repeats", "2", "--threads", "4"]
    rc = c.run("compare", [sys.executable, "benchmarks/compare_model.py", "--device", c.device,
                           *args], timeout=240)
    lines = c.log("compare").read_text().splitlines()
    table = [ln for ln in lines if ln.strip()[:5] in ("batch",) or ln.strip()[:1].isdigit()]
    if rc != 0 or not table:
        return "FAIL", f"rc {rc}: {c.tail('compare')}"
    return "ok", " / ".join(" ".join(ln.split()) for ln in table[-4:])


def _train_figures(run: Path) -> str:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("kind") == "train"]
    parts = []
    for stage in ("pretrain", "finetune", "adversarial"):
        s = [r for r in train if r["stage"] == stage]
        if s:
            tps = sorted(r["tokens_per_s"] for r in s)[len(s) // 2]
            parts.append(f"{stage} loss {s[0]['loss']:.2f}->{s[-1]['loss']:.2f}, "
                         f"{tps:.0f} tok/s")
    return "; ".join(parts)


def step_train(c: Check) -> tuple[str, str]:
    out = c.work / "tiny"
    shutil.rmtree(out, ignore_errors=True)
    precision = "fp32" if c.dry_run else "bf16"
    rc = c.run("train", [sys.executable, "-m", "cli.main", "--log-level", "WARNING", "train",
                         "tiny", "--data", str(TINY_DATA), "--out", str(out), "--device",
                         c.device, "--set", f"precision={precision}", "--no-progress"],
               timeout=240)
    if rc != 0 or not (out / "final").is_dir():
        return "FAIL", f"rc {rc}: {c.tail('train')}"
    return "ok", f"{precision}: {_train_figures(out)}"


def step_ddp(c: Check) -> tuple[str, str]:
    import torch

    if c.dry_run or torch.cuda.device_count() < 2:
        return "skip", "needs 2 GPUs" if not c.dry_run else "dry run"
    out = c.work / "ddp"
    rc = c.run("ddp", [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                       "-m", "cli.main", "--log-level", "WARNING", "train", "tiny", "--data",
                       str(TINY_DATA), "--out", str(out), "--device", "cuda", "--set",
                       "precision=bf16", "--no-progress"], timeout=240)
    if rc != 0:
        return "FAIL", f"rc {rc}: {c.tail('ddp')}"
    return "ok", f"2 ranks, NCCL: {_train_figures(out)}"


def default_overrides(minutes: float) -> list[str]:
    """The `default` recipe on one GPU for `minutes`: 4x its CPU batches, time budgets
    per stage (the rest goes to the tokenizer, data loading and evaluations), an
    inverse-square-root schedule (it needs no step count known in advance), and few
    saves and validations (each costs a sync and a write that a GPU step does not)."""
    sets = {"precision": "bf16", "pretrain.max_minutes": round(0.15 * minutes, 2),
            "finetune.max_minutes": round(0.6 * minutes, 2),
            "adversarial.max_minutes": round(0.1 * minutes, 2),
            "finetune.schedule": "inverse_sqrt", "finetune.warmup_steps": 500}
    for stage in ("pretrain", "finetune"):
        sets |= {f"{stage}.batch_tokens": 24576, f"{stage}.max_steps": 100000,
                 f"{stage}.valid_interval": 1000, f"{stage}.save_interval": 2000,
                 f"{stage}.log_interval": 50}
    sets |= {"adversarial.max_steps": 2000, "adversarial.save_interval": 500}
    return [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]


def unpack_data(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for xz in sorted(DATA_XZ.glob("*.xz")):
        with lzma.open(xz) as src, (dest / xz.name[:-3]).open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    return dest


def pack_run(run: Path, tar: Path) -> str:
    """The run's final checkpoint in fp16 (as shipped) plus its metrics, in one file."""
    from model.checkpoint import FILES, MANIFEST, load_checkpoint, save_checkpoint

    final = run / "final"
    ckpt = load_checkpoint(final)
    ship = run / "ship"
    extra = {f.name: f.read_bytes() for f in sorted(final.iterdir())
             if f.is_file() and f.name not in (*FILES, MANIFEST)}
    extra["metrics.jsonl"] = (run / "metrics.jsonl").read_bytes()
    # What save_checkpoint writes itself (as scripts/ship_default.py leaves them out).
    own = ("format_version", "files", "parameters", "dtype", "tasks", "languages")
    info = {k: v for k, v in ckpt.manifest.items() if k not in own}
    save_checkpoint(ship, ckpt.model, ckpt.tokenizer, dtype="float16", info=info,
                    extra_files=extra)
    with tarfile.open(tar, "w") as t:
        t.add(ship, arcname="default-run")
    return f"{tar.name} {tar.stat().st_size / 2**20:.1f} MiB"


def step_train_default(c: Check, minutes: float) -> tuple[str, str]:
    run = c.work / "default"
    shutil.rmtree(run, ignore_errors=True)
    if c.dry_run:
        cmd = ["tiny", "--data", str(TINY_DATA), "--set", "precision=fp32", "--max-steps", "2"]
    else:
        if not any(DATA_XZ.glob("*.xz")):
            return "FAIL", f"no data: carry {DATA_XZ.relative_to(ROOT)} (see gpu_check.sh)"
        cmd = ["default", "--data", str(unpack_data(c.work / "data")),
               *default_overrides(minutes)]
    rc = c.run("train-default", [sys.executable, "-m", "cli.main", "train", *cmd, "--out",
                                 str(run), "--device", c.device, "--no-progress"],
               timeout=minutes * 60 + 240)
    if rc != 0 or not (run / "final").is_dir():
        return "FAIL", f"rc {rc}: {c.tail('train-default')}"
    manifest = json.loads((run / "final" / "manifest.json").read_text())
    valid = manifest.get("validation", {})
    packed = pack_run(run, c.out / "default-run.tar")
    return "ok", (f"{_train_figures(run)}; valid loss {valid.get('valid_loss', float('nan')):.3f},"
                  f" BLEU {valid.get('bleu', float('nan')):.2f}; {packed}")


# -- the run ------------------------------------------------------------------------------


def format_rows(rows: list[Row]) -> str:
    head = ("step", "status", "seconds", "result")
    cells = [head, *((r.step, r.status, f"{r.seconds:.0f}", r.result) for r in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(3)]
    return "\n".join("  ".join([*(x.ljust(w) for x, w in zip(r[:3], widths, strict=True)),
                                r[3]]) for r in cells)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description=__doc__)
    p.add_argument("--dry-run", action="store_true", help="everything but CUDA, on the CPU")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check-out")))
    p.add_argument("--steps", default="env,tests,serve,compare,train,ddp",
                   help="comma-separated steps to run (default: all of the check)")
    p.add_argument("--train-default", type=float, metavar="MINUTES", default=None,
                   help="also train the default recipe on the full build for MINUTES")
    args = p.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    # Logs and runs stay outside OUT: the device tool brings back a few files only.
    work = Path(tempfile.mkdtemp(prefix="sora-gpu-check-"))
    c = Check(out, work, args.dry_run, "cpu" if args.dry_run else "cuda",
              "float32" if args.dry_run else "bfloat16")
    steps: dict[str, Callable[[Check], tuple[str, str]]] = {
        "env": step_env, "tests": step_tests, "serve": step_serve, "compare": step_compare,
        "train": step_train, "ddp": step_ddp,
    }
    wanted = [s for s in args.steps.split(",") if s]
    unknown = set(wanted) - set(steps)
    if unknown:
        p.error(f"--steps: unknown {', '.join(sorted(unknown))}; choose from {', '.join(steps)}")
    todo = [(s, steps[s]) for s in wanted]
    if args.train_default is not None:
        minutes = args.train_default
        todo.append(("train-default", lambda c: step_train_default(c, minutes)))
    rows: list[Row] = []
    for name, fn in todo:
        start = time.monotonic()
        try:
            status, result = fn(c)
        except Exception as e:  # a broken step is a result, not the end of the check
            status, result = "FAIL", f"{type(e).__name__}: {e}"
        rows.append(Row(name, status, time.monotonic() - start, result))
        print(f"[gpu_check] {name}: {status} ({rows[-1].seconds:.0f} s) {result}", flush=True)
    table = format_rows(rows)
    (out / "summary.txt").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    with tarfile.open(out / "logs.tar.gz", "w:gz") as t:
        for f in sorted(work.glob("*")):
            if f.is_file():
                t.add(f, arcname=f.name)
    shutil.rmtree(work, ignore_errors=True)
    print("\n" + table)
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
