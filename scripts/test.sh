#!/usr/bin/env bash
# The test command of the README (and of CI): set up .venv, lint, run the whole suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
cd "$root"
ruff check git_flor tests scripts
python -m pytest -q "$@"
