#!/usr/bin/env bash
# Install seqlab and what it needs into the current Python (python3, or $PYTHON).
# torch==2.13.0 (a CPU build) is installed only when torch is missing: a bare
# `pip install torch` would pull gigabytes of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
extras=${SEQLAB_EXTRAS:-dev}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing torch==2.13.0 (CPU build)"
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".[${extras}]"
# The serving tests drive the playground page in a real headless Chromium (Debian's).
if [[ ",${extras}," == *",dev,"* ]] && ! command -v chromium >/dev/null 2>&1 \
    && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: installing Chromium (apt-get) for the browser test"
  { apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; } \
    || echo "setup: could not install Chromium; the browser test will be skipped"
fi
# Sequence-to-sequence data made on the machine: espeak-ng pronounces the words of the
# system word list (Debian's espeak-ng and wamerican).
if { ! command -v espeak-ng >/dev/null 2>&1 || [ ! -f /usr/share/dict/words ]; } \
    && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: installing espeak-ng and a word list (apt-get) for the seq2seq data"
  { apt-get install -y -q espeak-ng wamerican >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q espeak-ng wamerican >/dev/null 2>&1; }; } \
    || echo "setup: could not install espeak-ng; the grapheme-to-phoneme data cannot be made"
fi
command -v pyenv >/dev/null 2>&1 && pyenv rehash >/dev/null 2>&1 || true
echo "setup: seqlab $("$PY" -c 'import seqlab; print(seqlab.__version__)') ready (torch $("$PY" -c 'import torch; print(torch.__version__)'))"
