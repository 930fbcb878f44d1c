#!/usr/bin/env bash
# setup-venv.sh PYTHON VENV PIP-INSTALL-ARGS...: create or update a virtual environment.
# A venv that a failed first build left behind (no working pip) is removed and rebuilt, and
# a first build that fails is removed again, so a failed `make setup` never leaves a
# half-built .venv that breaks every later make. An update of a working venv that fails
# leaves it as it was (pip installs package by package) and can simply be rerun.
# On Debian/Ubuntu, python3-venv is installed when missing (as root), or named (otherwise).
set -euo pipefail
py=$1 venv=$2
shift 2

if [[ -e $venv ]] && ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  echo "setup-venv: $venv is half-built (no working pip), removing it and building it again"
  rm -rf "$venv"
fi

if [[ ! -e $venv ]]; then
  if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
      echo "setup-venv: installing python3-venv (apt-get), which $py needs to make virtual environments"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
      echo "setup-venv: $py cannot make virtual environments. On Debian/Ubuntu: sudo apt-get install -y python3-venv, then rerun." >&2
      exit 2
    fi
  fi
  trap 'rc=$?; if ((rc != 0)); then echo "setup-venv: failed, removing the half-built $venv; fix the error above and rerun" >&2; rm -rf "$venv"; fi' EXIT
  "$py" -m venv "$venv"
fi
"$venv/bin/pip" install -q "$@"
