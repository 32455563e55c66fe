#!/usr/bin/env bash
# Installs what the project needs to build: uv, then the locked Python
# dependencies. Server packages (PostgreSQL 15, Redis 7, Mosquitto 2) are
# installed by `parking stack up` itself, with apt-get when running as root.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v uv >/dev/null 2>&1; then
  if [ -x "$HOME/.local/bin/uv" ]; then
    export PATH="$HOME/.local/bin:$PATH"
  else
    echo "[bootstrap] installing uv with pip" >&2
    python3 -m pip install --quiet --disable-pip-version-check uv \
      || python3 -m pip install --quiet --user uv
    export PATH="$HOME/.local/bin:$PATH"
  fi
fi
command -v uv >/dev/null 2>&1 || { echo "[bootstrap] uv is not on PATH after install" >&2; exit 1; }

# Python 3.11 from the machine; never download an interpreter.
export UV_PYTHON_DOWNLOADS=never
uv sync --frozen --quiet
