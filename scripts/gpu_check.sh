#!/usr/bin/env bash
# One-shot check of Sora's CUDA path, ready for the day a GPU machine is lent (the device
# tool's `run`): the `gpu` tests, the default checkpoint served on CUDA in bf16 under a
# short HTTP + gRPC load, the model benchmark at batch 1/16/64, the tiny recipe trained
# with bf16 autocast (and 2-process DDP with two GPUs). Results go to $OUT (summary.txt,
# summary.json, logs.tar.gz; default-run.tar with --train-default); one table is printed.
#
#   bash scripts/gpu_check.sh                      # on the GPU machine: about 5 minutes
#   bash scripts/gpu_check.sh --train-default 6    # also train the default recipe 6 min
#   bash scripts/gpu_check.sh --dry-run --out DIR  # here and in CI: all but CUDA, on CPU
#
# On the GPU machine `python3` holds CUDA PyTorch; what else Sora needs travels as
# wheels in .whl/ (carry it), installed into /tmp/site. --train-default reads the full
# data build from .gpu/data/*.xz (carry .gpu). scripts/gpu_prepare.sh makes both.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " == *" --dry-run "* ]]; then
    PY=${PYTHON:-.venv/bin/python}
else
    PY=python3
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site .whl/*.whl || exit 1
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec "$PY" scripts/gpu_check.py "$@"
