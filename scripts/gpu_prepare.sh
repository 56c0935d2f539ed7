#!/usr/bin/env bash
# Prepares what scripts/gpu_check.sh needs on a GPU machine that reaches no registry:
# wheels (Python 3.12, x86-64) of what Sora needs and that machine's image lacks, at the
# versions installed in .venv, into .whl/; with DATA_DIR, that `sora data debian` build
# xz-compressed file by file into .gpu/data/ (--train-default reads it). Both folders are
# git-ignored through .git/info/exclude and travel with the device tool's `carry`.
#
#   bash scripts/gpu_prepare.sh [DATA_DIR]      # ~15 MB of wheels; ~31 MB of data
set -euo pipefail
cd "$(dirname "$0")/.."
# The image holds torch, numpy, tokenizers, safetensors, grpcio, httpx, aiohttp, pyyaml,
# sacrebleu, matplotlib, pytest and transformers (the device tool's KINDS.md); these
# are the rest. grpcio and protobuf travel anyway: the generated stubs need >= 1.76 / 6.31.
PACKAGES="fastapi starlette pydantic pydantic_core pydantic-settings python-dotenv
typing-inspection annotated-types typing_extensions opentelemetry-api uvicorn httptools
grpcio grpcio-health-checking grpcio-reflection protobuf python-multipart nltk lz4
pytest-asyncio"
for f in .whl/ .gpu/; do grep -qx "/$f" .git/info/exclude 2>/dev/null || echo "/$f" >> .git/info/exclude; done
mkdir -p .whl
pins=()
for p in $PACKAGES; do
    pins+=("$p==$(.venv/bin/python -m pip show "$p" | sed -n 's/^Version: //p')")
done
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${pins[@]}"
# rouge-score is published as a source distribution only: build its (pure Python) wheel.
.venv/bin/python -m pip wheel -q --no-deps -w .whl \
    "rouge_score==$(.venv/bin/python -m pip show rouge_score | sed -n 's/^Version: //p')"
du -sh .whl
if [ $# -ge 1 ]; then
    mkdir -p .gpu/data
    for f in "$1"/*; do xz -9 -T2 -c "$f" > ".gpu/data/$(basename "$f").xz"; done
    du -sh .gpu/data
fi
