# syntax=docker/dockerfile:1
#
# Sora's serving image: `sora serve` (HTTP :8000, gRPC :50051, Prometheus at /metrics)
# with the default checkpoint baked in. A builder stage installs the serving dependencies
# into a virtual environment; the runtime stage copies only that environment and the
# checkpoint, so no pip cache, test or training package ships (one build tool does:
# g++, for torch.compile; see the runtime stage).
#
# CPU (default):
#   docker build -t sora:0.1.0 .
# GPU (CUDA torch wheel; the wheel brings its own CUDA runtime, the host brings the driver
# through the NVIDIA container toolkit):
#   docker build -t sora:0.1.0-gpu \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
# (python:3.11-slim with the cu128 index also works and is smaller; a CUDA base image is
# for clusters whose policy or tooling expects one.)
#
# tests/deploy/test_deploy_image.py (pytest -m slow) repeats the `pip install` steps below in a fresh
# virtual environment and serves from it: CI has no Docker engine to build this image.

ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------
# base: the Python both stages share, so the venv's interpreter links stay valid.
FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# CUDA base images (nvidia/cuda:*-ubuntu*) come without Python: take the distribution's.
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# ---------------------------------------------------------------------------------------
# source: the build context, allow-listed by .dockerignore (pyproject, README, model/,
# service/, cli/, proto/, checkpoints/sora-default/), less the checkpoint.
FROM base AS source
COPY . /src
RUN rm -rf /src/checkpoints

# ---------------------------------------------------------------------------------------
# builder: torch first from the chosen index (CPU by default: no multi-GB CUDA download),
# then Sora with the `serve` extra only. The `train` extra (sacrebleu, matplotlib, ...)
# is never installed.
FROM base AS builder
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url ${TORCH_INDEX_URL} "torch==${TORCH_VERSION}"
# The sources without the checkpoint (copied into the runtime stage directly), so a new
# checkpoint does not re-run this install: the copied tree, and so the cache key, is the same.
COPY --from=source /src /src
WORKDIR /src
RUN pip install ".[serve]"
# Fail the build, not the first request, if the installed (not the /src) serving stack
# does not import or the CLI has no `serve`.
RUN cd / && python -c "import torch, fastapi, uvicorn, grpc, prometheus_client, service" \
    && sora serve --help >/dev/null

# ---------------------------------------------------------------------------------------
# runtime: the venv, the default checkpoint, an unprivileged user.
FROM base AS runtime
ARG SORA_VERSION=0.1.0
LABEL org.opencontainers.image.title="sora" \
      org.opencontainers.image.description="Sora encoder-decoder serving: translate, summarize, answer" \
      org.opencontainers.image.version="${SORA_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# g++ (with libgomp): torch.compile's CPU backend builds the encoder and decode-step
# kernels with it, in the background once the server is ready (SORA_COMPILE=background;
# ~1.2-1.3x CPU throughput). Without it, the model is served eagerly. GPU images do not
# need it for that (background leaves GPUs eager).
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 sora \
    && useradd --system --uid 10001 --gid sora --home-dir /home/sora --create-home \
        --shell /usr/sbin/nologin sora

COPY --from=builder /opt/venv /opt/venv

# The model repository (ROOT/NAME/ is a checkpoint, served as version "1"). A volume
# mounted here replaces it; an empty named volume is first filled from the image.
COPY --chown=sora:sora checkpoints/sora-default/ /models/sora-default/

# inductor's on-disk cache (SORA_COMPILE_CACHE_DIR): mount a volume here and a restart
# compiles from it (~30 s instead of ~90 s on 2 cores). Not filled at build time: its
# kernels are built for the CPU they run on (vector ISA), which a build host may not share.
RUN mkdir -p /var/cache/sora/compile && chown -R sora:sora /var/cache/sora

# Every setting is a SORA_* variable (service/config.py); override with -e / env:.
# SORA_MODEL_REPOSITORY must be set: the built-in default is a path beside the sources.
# Under a CPU quota also set OMP_NUM_THREADS to it (torch sizes its pool by host cores).
ENV PATH=/opt/venv/bin:$PATH \
    SORA_HOST=0.0.0.0 \
    SORA_HTTP_PORT=8000 \
    SORA_GRPC_PORT=50051 \
    SORA_MODEL_REPOSITORY=/models \
    SORA_DEVICE=auto \
    SORA_LOG_FORMAT=json \
    SORA_DRAIN_TIMEOUT_S=30 \
    SORA_COMPILE_CACHE_DIR=/var/cache/sora/compile

USER sora:sora
WORKDIR /home/sora
EXPOSE 8000 50051

# Ready = model loaded, verified and warmed, and not draining. Compiling no longer
# delays it (it runs in the background, while serving), so the start period covers
# loading alone (seconds; see README "Start-up"), with room for a slow disk.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('SORA_HTTP_PORT', '8000'), timeout=2)"]

# Exec form: `sora` is PID 1 and receives SIGTERM itself; it stops taking new requests,
# drains for up to SORA_DRAIN_TIMEOUT_S and exits 0. Give it longer than that to stop
# (docker stop -t 45, compose stop_grace_period, k8s terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
CMD ["sora", "serve"]
