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
    echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
