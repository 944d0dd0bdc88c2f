#!/usr/bin/env bash
# Creates the project's virtual environment and installs everything into it, on a fresh Debian 12 machine too:
# only `python3` there (no `python`), and pip refuses the system interpreter (PEP 668).
# Usage: scripts/bootstrap.sh VENV_DIR "DEBIAN PACKAGES"
set -euo pipefail
venv=${1:-.venv}
debian_packages=${2:-}

step() { printf '\n==> %s\n' "$*"; }

apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "not root (or no apt-get): install $* yourself; tests that need them are skipped" >&2
        return 0
    fi
    step "apt-get install $*"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

command -v python3 >/dev/null || apt_install python3
if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    # left by a `python3 -m venv` that failed half-way (no ensurepip before python3-venv was installed)
    echo "$venv has no pip: creating it again" >&2
    rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
    # Debian's python3 ships venv without ensurepip until python3-venv is installed
    python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
    step "python3 -m venv $venv ($(python3 --version))"
    python3 -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

step "pip install torch==2.13.0 (pinned: an unpinned torch pulls a multi-GB CUDA build)"
"${pip[@]}" install --progress-bar on torch==2.13.0
step "pip install -e .[dev] (torch stays at 2.13.0)"
"${pip[@]}" install --progress-bar on -e ".[dev]" torch==2.13.0

missing=()
for p in $debian_packages; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then apt_install "${missing[@]}"; fi

step "ready: activate with 'source $venv/bin/activate'"
