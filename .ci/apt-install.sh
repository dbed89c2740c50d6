#!/usr/bin/env bash
# Install the Debian/Ubuntu packages given that are not installed yet (apt-get, with sudo
# when not root); say which on stderr. Does nothing where dpkg/apt-get are missing.
# Used by run.sh and tests/run.sh.   Usage: bash .ci/apt-install.sh PACKAGE...
set -euo pipefail
command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 || exit 0
missing=""
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -n "$missing" ] || exit 0
echo "installing system packages:$missing" >&2
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
