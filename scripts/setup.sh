#!/usr/bin/env bash
# Make .venv with git-flor and its test/demo needs installed; fast when already done.
# Sourced by scripts/demo.sh and scripts/test.sh so that each README command is the whole set-up.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-$(command -v python3.11 || command -v python3)}"
stamp="$venv/.git-flor-installed"
want="$(cat "$root/pyproject.toml" "$root/setup.py" | sha256sum | cut -c1-16)"
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
log="$venv/install.log"
quiet() { "$@" >>"$log" 2>&1 || { cat "$log" >&2; echo "set-up failed: see above" >&2; exit 1; }; }
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setting up $venv (once; log in $log)" >&2
    : > "$log"
    quiet "$venv/bin/python" -m pip install --disable-pip-version-check --upgrade pip
    quiet "$venv/bin/python" -m pip install --disable-pip-version-check -e "$root[test]"
    # torch is optional for users; the tests use it when this machine carries its
    # CPU wheel locally (a plain `pip install torch` would pull gigabytes of CUDA).
    for dir in ${PIP_FIND_LINKS:-} /opt/wheels; do
        if ls "$dir"/torch-2.13.0* >/dev/null 2>&1; then
            quiet "$venv/bin/python" -m pip install --disable-pip-version-check --find-links "$dir" torch==2.13.0
            break
        fi
    done
    echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
