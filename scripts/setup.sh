#!/usr/bin/env bash
# Make .venv with git-flor and its test/demo needs installed; fast when already done.
# Sourced by scripts/demo.sh and scripts/test.sh so that each README command is the whole set-up.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-$(command -v python3.11 || command -v python3)}"
stamp="$venv/.git-flor-installed"
want="$(cat "$root/pyproject.toml" | sha256sum | cut -c1-16)"
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[test]"
    # torch is optional for users; the tests use it when this machine carries its
    # CPU wheel locally (a plain `pip install torch` would pull gigabytes of CUDA).
    for dir in ${PIP_FIND_LINKS:-} /opt/wheels; do
        if ls "$dir"/torch-2.13.0* >/dev/null 2>&1; then
            "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --find-links "$dir" torch==2.13.0
            break
        fi
    done
    echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
