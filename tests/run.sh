#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, then run it.
# Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: JACK (dummy server for end-to-end tests), PortAudio (sounddevice),
# FluidSynth + a small GM SoundFont (corpus tests), libsndfile (soundfile).
APT_PACKAGES="jackd2 libportaudio2 libsndfile1 fluidsynth timgm6mb-soundfont"
PY="${PYTHON:-python3}"
# Debian 12 / Ubuntu 23.04+ refuse `pip install` into the system Python (PEP 668): the
# tests then run in a virtual environment (.venv, shared with run.sh) that still sees the
# system's packages. Debian ships venv/ensurepip separately.
EXTERNALLY_MANAGED=0
"$PY" -c 'import os, sys, sysconfig
sys.exit(0 if sys.prefix == sys.base_prefix and os.path.exists(
    os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) else 1)' && EXTERNALLY_MANAGED=1
if [ "$EXTERNALLY_MANAGED" = 1 ] && ! "$PY" -c "import ensurepip, venv" >/dev/null 2>&1; then
  APT_PACKAGES="$APT_PACKAGES python3-venv"
fi
bash .ci/apt-install.sh $APT_PACKAGES

if [ "$EXTERNALLY_MANAGED" = 1 ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv --system-site-packages .venv
  PY=.venv/bin/python
fi
# torch is pinned: 2.13.0 is the local CPU build on these machines.
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -e '.[train,test]'

exec "$PY" -m pytest "$@"
