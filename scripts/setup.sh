#!/usr/bin/env bash
# Sets up Sora on a fresh machine: a virtual environment in .venv with the serving,
# training and development dependencies, plus the system tools the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    # Prometheus (promtool + server) for the metrics integration tests, lz4 for data,
    # docker-compose to validate the compose file, g++ for torch.compile's CPU kernels,
    # Chromium and its WebDriver for the playground's browser tests.
    pkgs=()
    if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
        pkgs+=(prometheus lz4 docker-compose)
    fi
    command -v g++ >/dev/null || pkgs+=(g++)
    command -v chromium >/dev/null || pkgs+=(chromium)
    command -v chromedriver >/dev/null || pkgs+=(chromium-driver)
    if [ ${#pkgs[@]} -gt 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
    fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
# Exact CPU torch first (a local wheel on our CI machines); CUDA users install their
# torch before running this script and it is kept, since the range below admits it.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/pip install -q "torch==${SORA_TORCH_VERSION:-2.13.0}"
fi
.venv/bin/pip install -q -e ".[serve,train,dev]"
echo "Sora is set up: activate with 'source .venv/bin/activate'"
