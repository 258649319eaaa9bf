#!/usr/bin/env bash
# Set up everything spray needs on a fresh machine, idempotently:
#  - Debian packages when running as root: the Fashion-MNIST dataset (demo), chromium + fonts (browser test);
#  - a virtual environment in .venv with spray and its dashboard/test extras (pip takes torch from local disk).
# Usage: scripts/bootstrap.sh            (sourced by scripts/demo and scripts/test)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
log() { printf '[bootstrap] %s\n' "$*" >&2; }

want_pkgs=()
[ -d /usr/share/datasets/fashion-mnist ] || want_pkgs+=(dataset-fashion-mnist)
if [ "${SPRAY_SKIP_BROWSER:-0}" != 1 ]; then
  [ -x /usr/bin/chromium ] || want_pkgs+=(chromium)
  [ -d /usr/share/fonts/truetype/liberation ] || want_pkgs+=(fonts-liberation)
fi
if [ ${#want_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian packages: ${want_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${want_pkgs[@]}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${want_pkgs[@]}" >/dev/null; } \
      || log "WARNING: could not install ${want_pkgs[*]} (the demo falls back to sklearn digits; browser tests skip)"
  else
    log "not root: skipping Debian packages ${want_pkgs[*]} (demo falls back to sklearn digits; browser tests skip)"
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.spray-install-stamp
# Test oracles whose declared pins conflict with what spray uses (zennit-crp pins zennit<=0.4.6, LXT pulls
# transformers/bitsandbytes, virelay pins pillow<11): installed without their dependencies; what their tested
# modules do need comes from the test extra (h5py, matplotlib) or ORACLE_DEPS.
ORACLES=("lxt==2.1" "zennit-crp==0.6.0" "virelay==0.6.1")
ORACLE_DEPS=("flask==3.1.3" "flask-cors==5.0.1")
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "installing spray with its dashboard and test extras into .venv (torch comes from local disk)"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e "$ROOT[dashboard,test]"
  .venv/bin/python -m pip install -q "${ORACLE_DEPS[@]}"
  .venv/bin/python -m pip install -q --no-deps "${ORACLES[@]}"
  echo "$want" > "$stamp"
fi
log "ready: $ROOT/.venv"
