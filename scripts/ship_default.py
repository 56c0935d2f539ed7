"""Turn a finished `sora train default` run into the shipped checkpoint.

    .venv/bin/python scripts/ship_default.py /work/runs/default/final

Copies the run's final checkpoint to checkpoints/sora-default with fp16 weights (the
model loads them as fp32), evaluates it on the committed split data/eval (full, with
baselines -> manifest "evaluation"; and the smaller subset the regression test re-runs
-> manifest "regression"), and rewrites the README's example outputs.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

from model.checkpoint import FILES, MANIFEST, load_checkpoint, save_checkpoint
from model.sampling import DecodingParams
from model.training.evaluate import evaluate, format_table, record_in_manifest
from model.training.evaluate_cli import load_records

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "checkpoints" / "sora-default"
EVAL = ROOT / "data" / "eval"
REGRESSION = {"max_examples": 96, "max_new_tokens": 96}
MANIFEST_KEYS = ("format_version", "files", "parameters", "dtype", "tasks", "languages")


def main(run_final: str, target: Path = TARGET, write_readme: bool = True) -> int:
    src = Path(run_final)
    ckpt = load_checkpoint(src)
    info = {k: v for k, v in ckpt.manifest.items() if k not in MANIFEST_KEYS}
    info["name"] = "sora-default"
    # The adversarial stage's discriminator travels too: serving reranks n-best lists by
    # it (`rerank`). Kept in float32 as trained (small: one encoder and a head).
    extra = {
        f.name: f.read_bytes()
        for f in sorted(src.iterdir())
        if f.is_file() and f.name not in (*FILES, MANIFEST)
    }
    save_checkpoint(target, ckpt.model, ckpt.tokenizer, dtype="float16", info=info,
                    extra_files=extra)
    shipped = load_checkpoint(target)
    records = load_records(EVAL, "test", ("translate", "summarize", "answer"))
    t0 = time.time()
    full = evaluate(shipped, records, batch_size=32, params=DecodingParams(max_new_tokens=128))
    print(format_table(full))
    print(f"full evaluation: {time.time() - t0:.0f} s")
    record_in_manifest(target, full, key="evaluation")
    reg = evaluate(
        shipped, records, batch_size=32,
        params=DecodingParams(max_new_tokens=REGRESSION["max_new_tokens"]),
        max_examples=REGRESSION["max_examples"],
    )
    manifest = json.loads((target / MANIFEST).read_text(encoding="utf-8"))
    manifest["regression"] = {
        **REGRESSION,
        "groups": [
            {"task": g.task, "group": g.group, "examples": g.examples, "scores": g.scores}
            for g in reg.groups
        ],
    }
    tmp = target / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    tmp.replace(target / MANIFEST)
    if write_readme:
        # By file: putting tests/ on sys.path would shadow the service package.
        spec = importlib.util.spec_from_file_location(
            "readme_examples", ROOT / "tests" / "readme_examples.py"
        )
        assert spec is not None and spec.loader is not None
        readme_examples = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(readme_examples)
        readme_examples.main(["--write"])
    return 0


if __name__ == "__main__":
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else TARGET
    sys.exit(main(sys.argv[1], target, write_readme=target == TARGET))
