#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, then run it.
# Usage: bash tests/run.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: JACK (dummy server for end-to-end tests), PortAudio (sounddevice),
# FluidSynth + a small GM SoundFont (corpus tests), libsndfile (soundfile).
APT_PACKAGES="jackd2 libportaudio2 libsndfile1 fluidsynth timgm6mb-soundfont"
missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi

PY="${PYTHON:-python3}"
# torch is pinned: 2.13.0 is the local CPU build on these machines.
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -e '.[train,test]'

exec "$PY" -m pytest "$@"
