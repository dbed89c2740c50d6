#!/usr/bin/env bash
# The README's first command: set CANNe Live up on this machine, then play it.
#
#   bash run.sh [canne run options...]      e.g. bash run.sh --status --midi-in nano
#
# 1. Debian/Ubuntu: installs the system packages that are missing (PortAudio, and Python's
#    venv module where the distribution splits it off), with sudo when not root.
#    Elsewhere this step is skipped: see docs/install.md for macOS and Windows.
# 2. Creates a virtual environment (.venv, or $CANNE_VENV) with the instrument installed
#    (editable, from this checkout); re-installs only when pyproject.toml changed.
#    A virtual environment because Debian 12 / Ubuntu 23.04+ refuse `pip install` into
#    the system Python (PEP 668).
# 3. Runs `canne run` with the shipped default model and mapping. With no audio device it
#    says so in one line and exits with status 2.
#
# Environment: PYTHON (default python3), CANNE_VENV (default .venv).
set -euo pipefail
cd "$(dirname "$0")"

PY="${PYTHON:-python3}"
VENV="${CANNE_VENV:-.venv}"

APT_PACKAGES="libportaudio2"
# Debian's Python has venv/ensurepip in a separate package.
if ! "$PY" -c "import ensurepip, venv" >/dev/null 2>&1; then
  APT_PACKAGES="$APT_PACKAGES python3-venv"
fi
bash .ci/apt-install.sh $APT_PACKAGES

if [ ! -x "$VENV/bin/python" ] && [ ! -x "$VENV/Scripts/python.exe" ]; then
  echo "run.sh: creating the virtual environment $VENV" >&2
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
[ -x "$VPY" ] || VPY="$VENV/Scripts/python.exe"  # Git Bash on Windows

STAMP="$VENV/.canne-installed"
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  echo "run.sh: installing CANNe Live into $VENV (first time: a minute or two)" >&2
  LOG="$VENV/install.log"
  if ! { "$VPY" -m pip install --upgrade pip && "$VPY" -m pip install -e .; } >"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    echo "run.sh: installing failed; the whole log is in $LOG" >&2
    exit 1
  fi
  touch "$STAMP"
fi

exec "$VPY" -m daemon.app.cli run "$@"
