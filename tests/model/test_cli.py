"""The `sora generate` / `sora inspect` commands on the tiny checkpoint, and the device,
dtype and int8 code paths they rely on."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from cli.main import main
from model.checkpoint import load_checkpoint
from model.device import quantize_int8, resolve_device
from model.generation import generate
from model.sampling import DecodingParams
from tests.model.test_compiled_model import needs_compiler

REPO = Path(__file__).resolve().parents[2]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_generate_translate(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["generate", "--checkpoint", str(tiny_checkpoint), "--task", "translate",
               "--target-lang", "de", "--max-new-tokens", "5", "--verbose", "Hello"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 1
    assert "\t[" in lines[0] and ", logprob -" in lines[0]


def test_generate_matches_library(
    tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    src = ckpt.tokenizer.source_ids("summarize", "The meeting covered budgets.")
    (expected,) = generate(ckpt.model, ckpt.tokenizer, [src], DecodingParams(max_new_tokens=8))
    rc = main(["generate", "--checkpoint", str(tiny_checkpoint), "--task", "summarize",
               "--max-new-tokens", "8", "The meeting covered budgets."])
    assert rc == 0
    assert capsys.readouterr().out == expected.text + "\n"


@needs_compiler
def test_generate_compiled_matches_eager(
    tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["generate", "--checkpoint", str(tiny_checkpoint), "--task", "translate",
            "--target-lang", "fr", "--max-new-tokens", "9", "Hello", "Good day"]
    assert main(args) == 0
    eager = capsys.readouterr().out
    assert main([*args, "--compile", "wait"]) == 0
    assert capsys.readouterr().out == eager


def test_generate_from_stdin(
    tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n\nGood morning\nBonjour\n"))
    rc = main(["generate", "--checkpoint", str(tiny_checkpoint), "--task", "translate",
               "--target-lang", "fr", "--max-new-tokens", "4", "--verbose"])
    out, _ = capsys.readouterr()
    assert rc == 0
    assert len(out.splitlines()) == 3  # blank lines skipped, one output per input line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "translate", "Hello"], "--target-lang is required for translate"),
        (["--target-lang", "xx", "Hello"], "unsupported language 'xx'"),
        (["--target-lang", "de", "--temperature", "0", "Hello"], "temperature: must be > 0"),
        (["--target-lang", "de", "--device", "cuda", "Hello"], "CUDA requested"),
    ],
)
def test_generate_errors(
    tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    rc = main(["generate", "--checkpoint", str(tiny_checkpoint), *args])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_generate_bad_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["generate", "--checkpoint", str(tmp_path / "none"), "--target-lang", "de", "Hi"])
    assert rc == 2
    assert "not a checkpoint directory" in capsys.readouterr().err


def test_generate_quantized(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated (still works)
        rc = main(["generate", "--checkpoint", str(tiny_checkpoint), "--target-lang", "de",
                   "--quantize", "--max-new-tokens", "4", "Hello"])
    assert rc == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_inspect_table(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tiny_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "verified (every sha256 matches)" in out
    rows = dict(line.split(None, 1) for line in out.splitlines()[1:])
    assert rows["format_version"] == "2"
    assert rows["name"] == "tiny-test"
    assert rows["dtype"] == "float32"
    assert rows["tasks"] == "translate, summarize, answer"
    assert len(rows["files.model.safetensors.sha256"]) == 64


def test_inspect_json(tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["inspect", "--json", str(tiny_checkpoint)]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "tiny-test"


def test_inspect_corrupted(
    tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Path(shutil.copytree(tiny_checkpoint, tmp_path / "ckpt"))
    with (path / "tokenizer.json").open("ab") as f:
        f.write(b" ")
    assert main(["inspect", str(path)]) == 1
    err = capsys.readouterr().err
    assert "tokenizer.json" in err and "truncated or replaced" in err


def test_entry_point_subprocess(tiny_checkpoint: Path) -> None:
    """The real command line, in a fresh interpreter, reading stdin."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "cli.main", "--log-level", "WARNING", "generate",
         "--checkpoint", str(tiny_checkpoint), "--task", "translate", "--target-lang", "de",
         "--max-new-tokens", "3"],
        input="Hello\n", capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1


# -- device and dtype selection ---------------------------------------------------------


def test_resolve_device_cpu() -> None:
    assert resolve_device("cpu") == (torch.device("cpu"), torch.float32)
    assert resolve_device("cpu", "bfloat16") == (torch.device("cpu"), torch.bfloat16)
    with pytest.raises(ValueError, match="dtype: expected auto or one of"):
        resolve_device("cpu", "int3")
    device, dtype = resolve_device()
    if torch.cuda.is_available():
        assert (device.type, dtype) == ("cuda", torch.bfloat16)
    else:
        assert (device, dtype) == (torch.device("cpu"), torch.float32)
        with pytest.raises(ValueError, match="CUDA requested but no GPU"):
            resolve_device("cuda")


def test_cpu_bfloat16_generation(tiny_checkpoint: Path) -> None:
    device, dtype = resolve_device("cpu", "bfloat16")
    ckpt = load_checkpoint(tiny_checkpoint, device, dtype)
    assert ckpt.model.embed.weight.dtype == torch.bfloat16
    src = ckpt.tokenizer.source_ids("translate", "Hello", "de")
    (r,) = generate(ckpt.model, ckpt.tokenizer, [src], DecodingParams(max_new_tokens=5))
    assert len(r.token_ids) <= 5


def test_quantize_int8(tiny_checkpoint: Path) -> None:
    ckpt = load_checkpoint(tiny_checkpoint)
    with warnings.catch_warnings():
        # torch 2.13 still runs quantize_dynamic but warns torch.ao.quantization is
        # deprecated (slated for removal in favour of torchao).
        warnings.simplefilter("ignore")
        q = quantize_int8(ckpt.model)
    linears = [m for m in q.modules() if type(m) is nn.Linear]
    quantized = [m for m in q.modules() if "quantized" in type(m).__module__]
    assert not linears and len(quantized) > 0
    assert any(type(m) is nn.Linear for m in ckpt.model.modules())  # original untouched
    src = ckpt.tokenizer.source_ids("translate", "Hello world", "de")
    params = DecodingParams(max_new_tokens=6)
    (fp,) = generate(ckpt.model, ckpt.tokenizer, [src], params)
    (i8,) = generate(q, ckpt.tokenizer, [src], params)  # type: ignore[arg-type]
    assert len(i8.token_ids) <= 6
    assert abs(i8.logprob - fp.logprob) < 0.5 * len(fp.token_ids) + 0.5


@pytest.mark.gpu
@needs_cuda
def test_cuda_bfloat16_matches_fp32(tiny_checkpoint: Path) -> None:
    device, dtype = resolve_device("auto")
    assert (device.type, dtype) == ("cuda", torch.bfloat16)
    gpu = load_checkpoint(tiny_checkpoint, device, dtype)
    cpu = load_checkpoint(tiny_checkpoint)
    src = cpu.tokenizer.source_ids("translate", "Hello world", "de")
    ids = torch.tensor([src])
    with torch.inference_mode():
        a = cpu.model(ids, ids[:, :4]).logits
        b = gpu.model(ids.to(device), ids[:, :4].to(device)).logits.float().cpu()
    torch.testing.assert_close(b, a, atol=5e-2, rtol=5e-2)
    (r,) = generate(gpu.model, gpu.tokenizer, [src], DecodingParams(max_new_tokens=5))
    assert len(r.token_ids) <= 5


@pytest.mark.gpu
@needs_cuda
def test_cuda_incremental_equals_full(tiny_checkpoint: Path) -> None:
    ckpt = load_checkpoint(tiny_checkpoint, "cuda", torch.float32)
    src = torch.tensor([[5, 6, 7, 2, 0, 0], [8, 9, 10, 11, 12, 2]], device="cuda")
    tgt = torch.tensor([[1, 5, 6, 7], [1, 9, 9, 9]], device="cuda")
    with torch.inference_mode():
        full = ckpt.model(src, tgt).logits
        cache = ckpt.model.prefill(src)
        steps = torch.stack([ckpt.model.decode_step(tgt[:, t], cache) for t in range(4)], 1)
    torch.testing.assert_close(steps, full, atol=1e-3, rtol=1e-3)


def test_bench_model_compares_precisions(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["bench", "model", "--batch-sizes", "2", "--num-sources", "2", "--new-tokens", "2",
               "--repeats", "1", "--threads", "1", "--precisions", "float32,bfloat16"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    head = out.splitlines()[-2].split()
    assert head[:3] == ["batch", "sora", "tok/s"] and "sora-bf16/sora" in head
    assert out.splitlines()[-1].split()[0] == "2"


def test_bench_model_rejects_an_unknown_precision(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "model", "--precisions", "fp8"]) == 2
    assert "--precisions" in capsys.readouterr().err


def test_bench_precision_variants_keep_the_weights() -> None:
    from benchmarks.model_bench import SHAPES, build_model, with_precision

    model = build_model(SHAPES["small"])
    fp32, bf16 = with_precision(model, "float32"), with_precision(model, "bfloat16")
    assert next(bf16.parameters()).dtype == torch.bfloat16
    for (name, a), b in zip(model.state_dict().items(), fp32.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert fp32 is not model  # a copy: the caller's model is left as it was
    with pytest.raises(ValueError, match="precision"):
        with_precision(model, "fp8")


@pytest.mark.parametrize("family", ["marian", "t5"])
def test_compare_model_families_import_and_share_ids(family: str, tmp_path: Path) -> None:
    """What benchmarks/compare_model.py relies on (CTranslate2 itself is not installed
    here): the random model imports, Sora decodes exactly the asked tokens, and every
    source id is a distinct token of the tokenizer CTranslate2's converter reads."""
    transformers = pytest.importorskip("transformers")
    from benchmarks.compare_model import BUILDERS, sora_imported_run
    from benchmarks.model_bench import BenchShape, make_sources
    from model.hf.importer import import_hf

    shape = BenchShape(300, 16, 2, 1, 1, 32, 4, 8)
    ids = BUILDERS[family](shape, tmp_path / "hf")
    sources = make_sources(shape, 3, first_id=ids.first_id, stop_id=ids.stop_id, eos=ids.eos)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    used = sorted({i for s in sources for i in s})
    tokens = tok.convert_ids_to_tokens(used)
    assert len(set(tokens)) == len(used) and tok.convert_tokens_to_ids(tokens) == used
    assert tok.convert_ids_to_tokens(ids.eos) == "</s>"
    import_hf(tmp_path / "hf", tmp_path / "sora")
    out = sora_imported_run(tmp_path / "sora", "float32", 3)(sources)
    assert [len(r.token_ids) for r in out] == [3, 3, 3]  # type: ignore[attr-defined]
