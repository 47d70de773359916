#!/usr/bin/env bash
# One command from a fresh clone to the end-to-end demo on the synthetic phantom:
# sets up .venv (see scripts/setup.sh) and runs `recokd demo`. Extra arguments go to the demo.
set -euo pipefail
# UTF-8 everywhere (progress bars and messages are not ASCII), whatever the locale says.
export PYTHONUTF8=1
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
exec "${RECOKD_VENV:-$root/.venv}/bin/recokd" demo "$@"
