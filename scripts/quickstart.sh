#!/usr/bin/env bash
# One command from a fresh clone to the end-to-end demo on the synthetic phantom:
# sets up .venv (see scripts/setup.sh) and runs `recokd demo`. Extra arguments go to the demo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup.sh"
exec "${RECOKD_VENV:-$root/.venv}/bin/recokd" demo "$@"
