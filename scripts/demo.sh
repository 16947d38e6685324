#!/usr/bin/env bash
# The main job of the README: set up .venv, then run the demo (see scripts/demo.py).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh"
python "$root/scripts/demo.py" "$@"
