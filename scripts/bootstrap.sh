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

# Front-end packages of the pages the platform serves come from the npm registry
# (never a CDN at run time): installed from the lock file, then copied where the
# API serves them (src/parking/api/static/vendor/, not committed).
if ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[bootstrap] installing nodejs and npm with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  else
    echo "[bootstrap] npm is missing: install nodejs and npm" >&2
    exit 1
  fi
fi
vendor=src/parking/api/static/vendor
if [ ! -f "$vendor/echarts.min.js" ] || [ frontend/package-lock.json -nt "$vendor/echarts.min.js" ]; then
  npm ci --prefix frontend --no-audit --no-fund --loglevel=error >/dev/null
  mkdir -p "$vendor"
  cp frontend/node_modules/echarts/dist/echarts.min.js "$vendor/echarts.min.js"
  cp frontend/node_modules/echarts/LICENSE "$vendor/echarts.LICENSE.txt"
fi

# A Chinese font for the printed codes' PNG captions (`parking qr render`) and the
# pages' screenshots: Debian's WenQuanYi Micro Hei.
if [ ! -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[bootstrap] installing fonts-wqy-microhei with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends fonts-wqy-microhei >/dev/null
  else
    echo "[bootstrap] no Chinese font: install fonts-wqy-microhei for PNG codes (SVG and PDF need none)" >&2
  fi
fi
